//! The fuzz targets (`fuzz/`, run for real with `scripts/fuzz.sh` and cargo-fuzz)
//! replayed on every test run, on stable: each target's entry point over its seed corpus
//! (`fuzz/corpus/<target>/`) and over deterministic mutations of every seed (bytes flipped,
//! ranges cut and repeated, syntax tokens inserted). A panic is a failed test. Inputs that
//! crashed a fuzz run are added to the corpus, so they are replayed here for ever.

use std::path::Path;

use anyhow::{Context, Result};
use tidemark_e2e::workspace_root;

/// Mutations of each seed per target.
const MUTATIONS: usize = 300;

/// Pieces of syntax the parsers care about, inserted at random places.
const TOKENS: &[&[u8]] = &[
    b"\n@@ ",
    b"\n---\n",
    b": ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"&a ",
    b"*a",
    b"<<: ",
    b"0755",
    b"yes",
    b"~",
    b"\"",
    b"'",
    b"\\",
    b"!",
    b",",
    b"=",
    b"(",
    b")",
    b"@revoked ",
    b"|1|",
    b"\0",
    b"\t",
    b"\xff\xfe",
    b"9999999999999999999999",
    b"-1",
    b"..",
    b"/",
];

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let end = (at + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            2 => {
                let end = (at + rng.below(64)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            _ => data.truncate(at),
        }
    }
    data
}

fn replay(target: &str, run: fn(&[u8])) -> Result<usize> {
    let dir = workspace_root().join("fuzz/corpus").join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("no corpus at {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    seeds.sort();
    anyhow::ensure!(!seeds.is_empty(), "{target}: empty corpus");
    let mut runs = 0;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for seed in &seeds {
        let data = std::fs::read(seed)?;
        run(&data);
        runs += 1;
        for _ in 0..MUTATIONS {
            run(&mutate(&data, &mut rng));
            runs += 1;
        }
    }
    Ok(runs)
}

/// A fuzz target: its name (and corpus directory) and entry point.
type Target = (&'static str, fn(&[u8]));

fn name(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() -> Result<()> {
    let targets: [Target; 8] = [
        ("fleet_repo", tidemark_schema::fuzzing::fleet_repo),
        ("selector", tidemark_schema::fuzzing::selector),
        (
            "duration_window",
            tidemark_schema::fuzzing::duration_and_window,
        ),
        ("manifest", tidemark::fuzzing::manifest),
        ("values", tidemark::fuzzing::values),
        ("known_hosts", tidemark::fuzzing::known_hosts),
        ("allowed_signers", tidemark::fuzzing::allowed_signers),
        ("sim_request", tidemark_sim::fuzzing::request_body),
    ];
    // Every target of fuzz/Cargo.toml is replayed here.
    let manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml"))?;
    let declared = manifest.matches("[[bin]]").count();
    assert_eq!(declared, targets.len(), "{}", name(&workspace_root()));
    for (target, run) in targets {
        let runs = replay(target, run)?;
        assert!(runs > MUTATIONS, "{target}: {runs} runs");
    }
    Ok(())
}
