//! The real `cmdm import` killed with SIGKILL at random points, then run again on the same
//! file each time: the import writes each batch through on a second thread (not in a
//! sled transaction), so this checks that a kill never leaves part of a batch. At the end
//! the store replays to its own projections, every row is applied exactly once, and the
//! records form the same entities as in an uninterrupted import.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cmdm_domain::{GoldenId, LogEntry};
use cmdm_hub::config::HubConfig;
use cmdm_matching::synth::SplitMix;
use cmdm_store::{Store, TreeName};

const KILLS: usize = 8;
const MAP: &str = "given_name=given_name,family_name=family_name,date_of_birth=date_of_birth,\
                   email=email,phone=phone,postcode=postcode,city=city,address_line1=address_line1";

fn cmdm(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cmdm"));
    command
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn import(dir: &Path, csv: &Path) -> Command {
    let mut command = cmdm(dir);
    command
        .arg("import")
        .arg("--csv")
        .arg(csv)
        .args(["--id", "record_id", "--source", "synth", "--batch", "100"])
        .args(["--map", MAP]);
    command
}

/// Every entry of a tree; the golden ids in it are sequence numbers, the same in both runs.
/// A source record's key, entity and prepared form.
type Placed = (Vec<u8>, Option<GoldenId>, Option<Vec<u8>>);

/// Each source record's key, entity and prepared form, in key order.
fn placed(store: &Store) -> Vec<Placed> {
    store
        .tree(TreeName::Records)
        .iter()
        .map(|item| {
            let (key, value) = item.expect("record");
            let parts = cmdm_engine::held::Parts::of(&value).expect("stored record");
            (
                key.to_vec(),
                parts.entity,
                parts.features.map(<[u8]>::to_vec),
            )
        })
        .collect()
}

fn tree(store: &Store, name: TreeName) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .tree(name)
        .iter()
        .map(|item| {
            let (k, v) = item.expect("read");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn an_import_killed_at_random_points_and_run_again_loses_and_duplicates_nothing() {
    let work = tempfile::tempdir().expect("temp dir");
    let csv = work.path().join("people.csv");
    let status = cmdm(work.path())
        .args(["generate", "--people", "4000", "--out"])
        .arg(&csv)
        .status()
        .expect("cmdm generate");
    assert!(status.success());
    let rows = std::fs::read_to_string(&csv).expect("csv").lines().count() - 1;

    let clean = work.path().join("clean");
    let started = Instant::now();
    assert!(import(&clean, &csv).status().expect("import").success());
    let took = started.elapsed();

    let crashed = work.path().join("crashed");
    let mut rng = SplitMix(2026);
    let mut landed = Vec::new();
    for _ in 0..KILLS {
        let mut child = import(&crashed, &csv).spawn().expect("import");
        // Each run goes on from where the last one stopped: kill it after about an
        // eighth of the whole import's time at most, so that all kills land before the end.
        let at = Duration::from_millis(
            50 + rng.below((took.as_millis() as usize / KILLS).max(1)) as u64,
        );
        std::thread::sleep(at);
        let finished = child.try_wait().expect("import status").is_some();
        child.kill().expect("SIGKILL");
        child.wait().expect("killed import reaped");
        if !finished {
            landed.push(at);
        }
    }
    assert!(
        landed.len() >= KILLS / 2,
        "most kills must land during an import: {landed:?} of {took:?}"
    );
    assert!(import(&crashed, &csv).status().expect("import").success());

    let config = HubConfig {
        data_dir: crashed.clone(),
        ..HubConfig::default()
    };
    let engine = cmdm_hub::open_engine(&config).expect("crashed store");
    let report = cmdm_engine::rebuild::verify(&engine).expect("verify");
    assert!(
        report.is_identical(),
        "the projections replay from the log: {report:?}"
    );
    let crashed_store = engine.store().clone();
    let clean_store = Store::open(&clean).expect("clean store");

    // Every row applied exactly once.
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for entry in crashed_store.log() {
        let (_, bytes) = entry.expect("log entry");
        if let LogEntry::Event(event) = LogEntry::from_stored(&bytes).expect("log entry") {
            *applied.entry(event.subject).or_default() += 1;
        }
    }
    assert_eq!(applied.len(), rows, "every row applied");
    assert!(applied.values().all(|&n| n == 1), "a row applied twice");

    // The same entities, with the same ids, and the same prepared records; the records'
    // times differ (each run files its rows at its own time), so they are not compared.
    assert!(
        placed(&crashed_store) == placed(&clean_store),
        "records' entities or prepared forms differ from the uninterrupted import's"
    );
    for name in [TreeName::Redirects, TreeName::Dedup] {
        assert!(
            tree(&crashed_store, name) == tree(&clean_store, name),
            "{} differs from the uninterrupted import's",
            name.as_str()
        );
    }
    assert_eq!(
        crashed_store.tree(TreeName::Entities).len(),
        clean_store.tree(TreeName::Entities).len()
    );
    eprintln!(
        "{rows} rows, {} of {KILLS} kills during an import of {took:?}",
        landed.len()
    );
}
