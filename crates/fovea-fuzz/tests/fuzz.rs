//! A short fuzzing pass over every target (CI's), and the committed regression inputs.

use std::time::Duration;

#[test]
fn every_target_survives_a_short_pass() {
    let opts = fovea_fuzz::Options {
        seconds: 3.0,
        seed: 7,
        timeout: Duration::from_secs(30),
        out: std::env::temp_dir().join("fovea-fuzz-test"),
        ..Default::default()
    };
    for t in fovea_fuzz::TARGETS {
        let r = fovea_fuzz::run(t, &opts);
        println!("{}: {} execs, {} outcomes", r.target, r.execs, r.outcomes);
        assert!(r.execs > 10, "{}: only {} runs", r.target, r.execs);
        assert!(
            r.outcomes >= 2,
            "{}: mutations reached no error path",
            r.target
        );
        assert!(r.crashes.is_empty(), "{}: {:?}", r.target, r.crashes);
    }
}

#[test]
fn seeds_load_cleanly() {
    // The seeds are valid files: each target accepts at least one of them, so the
    // fuzzer starts from the success path.
    for t in fovea_fuzz::TARGETS {
        let outcomes: Vec<String> = (t.seeds)()
            .iter()
            .map(|s| fovea_fuzz::replay(t, s).unwrap())
            .collect();
        assert!(
            outcomes.iter().any(|o| o == "ok" || o.contains("ok")),
            "{}: {outcomes:?}",
            t.name
        );
    }
}

#[test]
fn regression_inputs_do_not_panic() {
    let mut n = 0;
    for t in fovea_fuzz::TARGETS {
        for (path, data) in fovea_fuzz::regressions(t) {
            n += 1;
            if let Err(e) = fovea_fuzz::replay(t, &data) {
                panic!("{} ({}): {e}", t.name, path.display());
            }
        }
    }
    println!("{n} regression inputs replayed");
}

#[test]
fn a_panicking_target_is_caught_and_reported() {
    // The harness itself: a target that panics on some inputs is reported as a crash
    // with its message and input file, and the run goes on.
    fn picky(data: &[u8]) -> String {
        if data.first() == Some(&b'!') {
            panic!("bang");
        }
        "ok".into()
    }
    fn seeds() -> Vec<Vec<u8>> {
        vec![b"!boom".to_vec(), b"fine".to_vec()]
    }
    static PICKY: fovea_fuzz::Target = fovea_fuzz::Target {
        name: "picky",
        about: "test",
        run: picky,
        seeds,
    };
    let out = std::env::temp_dir().join("fovea-fuzz-harness-test");
    let r = fovea_fuzz::run(
        &PICKY,
        &fovea_fuzz::Options {
            seconds: 0.2,
            out: out.clone(),
            ..Default::default()
        },
    );
    assert_eq!(r.crashes.len(), 1, "{:?}", r.crashes);
    assert!(
        r.crashes[0].message.starts_with("bang at "),
        "{}",
        r.crashes[0].message
    );
    assert_eq!(std::fs::read(&r.crashes[0].input).unwrap()[0], b'!');
    assert!(r.execs > 2);
}
