//! `fovea-fuzz [--seconds N] [--target NAME] [--seed S] [--out DIR]`: fuzzes every
//! target (or one) for N seconds each and prints executions, outcomes and crashes.
//! Exits 1 when any target crashed (hangs end the process with exit code 3).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut opts = fovea_fuzz::Options::default();
    let mut only: Option<String> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned();
        let ok = match (args[i].as_str(), value) {
            ("--seconds", Some(v)) => v.parse().map(|s| opts.seconds = s).is_ok(),
            ("--seed", Some(v)) => v.parse().map(|s| opts.seed = s).is_ok(),
            ("--target", Some(v)) => {
                only = Some(v);
                true
            }
            ("--out", Some(v)) => {
                opts.out = v.into();
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!(
                "usage: fovea-fuzz [--seconds N] [--target NAME] [--seed S] [--out DIR]\ntargets: {}",
                fovea_fuzz::TARGETS
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return ExitCode::from(2);
        }
        i += 2;
    }
    let targets: Vec<&'static fovea_fuzz::Target> = match &only {
        Some(name) => match fovea_fuzz::target(name) {
            Some(t) => vec![t],
            None => {
                eprintln!("unknown target `{name}`");
                return ExitCode::from(2);
            }
        },
        None => fovea_fuzz::TARGETS.iter().collect(),
    };
    let mut crashed = false;
    println!(
        "{:<12} {:>9} {:>8} {:>9} {:>8} {:>7}",
        "target", "execs", "seconds", "execs/s", "outcomes", "crashes"
    );
    for t in targets {
        let r = fovea_fuzz::run(t, &opts);
        println!(
            "{:<12} {:>9} {:>8.1} {:>9.0} {:>8} {:>7}",
            r.target,
            r.execs,
            r.seconds,
            r.execs as f64 / r.seconds,
            r.outcomes,
            r.crashes.len()
        );
        for c in &r.crashes {
            println!("  CRASH {} (input: {})", c.message, c.input.display());
            crashed = true;
        }
    }
    if crashed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
