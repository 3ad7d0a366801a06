//! The example lab of the README (sbc/examples/sbc.toml,
//! teams-sim/examples/hub.toml, carrier-sim/examples/carrier.toml): each
//! file loads, and no two parties' media port ranges overlap, so the
//! three programs can share one machine without taking each other's ports.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

fn example(dir: &Path, rel: &str) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
    let name = Path::new(rel).file_name().unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text.replace("../../target/lab/", "")).unwrap();
    p
}

fn overlap(a: &RangeInclusive<u16>, b: &RangeInclusive<u16>) -> bool {
    a.start() <= b.end() && b.start() <= a.end()
}

#[test]
fn the_example_lab_loads_and_its_media_ranges_are_apart() {
    let dir = std::env::temp_dir().join(format!("drlab-example-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    drlab_sim::pki::TestPki::new()
        .unwrap()
        .write_pem(&dir, "sbc.example.com")
        .unwrap();
    let sbc = sbc::config::load(&example(&dir, "sbc/examples/sbc.toml")).unwrap();
    let hub = teams_sim::config::load(&example(&dir, "teams-sim/examples/hub.toml")).unwrap();
    let carrier =
        carrier_sim::config::load(&example(&dir, "carrier-sim/examples/carrier.toml")).unwrap();
    let ranges = [
        ("sbc", sbc.config.media_ports.clone()),
        ("teams-sim", hub.media_ports.clone()),
        ("carrier-sim", carrier.media_ports.clone()),
    ];
    for (i, (a, ra)) in ranges.iter().enumerate() {
        for (b, rb) in &ranges[i + 1..] {
            assert!(!overlap(ra, rb), "{a} {ra:?} overlaps {b} {rb:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
