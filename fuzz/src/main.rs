//! `spacepulse-fuzz TARGET [--runs N] [--seconds S] [--seed N] [--corpus DIR]`: runs a fuzz
//! target over its corpus as checked in, then over mutations of it (bit flips, interesting
//! bytes, insertions, deletions, repeats, splices, the target's dictionary) until N runs or S
//! seconds. A panic is a crash: the input is written to `fuzz/artifacts/TARGET/` and the
//! exit code is 1. Deterministic for a seed, so an abort (which no handler survives) is
//! found again with the same seed and the run count printed before it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use spacepulse_fuzz::{Outcome, Setup, TARGETS, Target};

const USAGE: &str =
    "usage: spacepulse-fuzz TARGET [--runs N] [--seconds S] [--seed N] [--corpus DIR]
targets: event_decoder, sql, sketch, report_query";

struct Args {
    target: &'static Target,
    runs: Option<u64>,
    seconds: Option<f64>,
    seed: u64,
    corpus: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let name = it.next().ok_or("no TARGET")?;
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("TARGET: no target {name:?}"))?;
    let mut out = Args {
        target,
        runs: None,
        seconds: None,
        seed: 1,
        corpus: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target.name),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        let number = |what: &str| format!("{flag}: expected {what}, got {value:?}");
        match flag.as_str() {
            "--runs" => out.runs = Some(value.parse().map_err(|_| number("a count"))?),
            "--seconds" => {
                let s: f64 = value.parse().map_err(|_| number("seconds"))?;
                if !(s.is_finite() && s > 0.0) {
                    return Err(number("a positive number of seconds"));
                }
                out.seconds = Some(s);
            }
            "--seed" => out.seed = value.parse().map_err(|_| number("a number"))?,
            "--corpus" => out.corpus = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if out.runs.is_none() && out.seconds.is_none() {
        return Err("give --runs or --seconds".into());
    }
    Ok(out)
}

/// xorshift64*: fast, and the same sequence for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to eight stacked mutations of `input`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], target: &Target) {
    const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'\'', b'(', b'\n'];
    for _ in 0..1 + rng.below(8) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                // A piece repeated: long chains, deep nesting.
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                let piece = input[at..at + n].to_vec();
                let most = if rng.below(16) == 0 { 4096 } else { 8 };
                let times = 1 + rng.below(most);
                for _ in 0..times {
                    input.splice(at..at, piece.iter().copied());
                }
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = from + 1 + rng.below(other.len() - from);
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..to].iter().copied());
                }
            }
            6 | 7 => {
                let token = target.dictionary[rng.below(target.dictionary.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.bytes());
            }
            _ if len > 1 => input.truncate(rng.below(len)),
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(target.largest);
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("spacepulse-fuzz: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let target = args.target;
    let mut corpus: Vec<Vec<u8>> = match std::fs::read_dir(&args.corpus) {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect(),
        Err(e) => {
            eprintln!("spacepulse-fuzz: --corpus {}: {e}", args.corpus.display());
            return ExitCode::from(2);
        }
    };
    corpus.sort();
    let seeds = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let setup = Setup::new();
    // A run that takes longer than HANG is a finding too (a statement the parser or planner
    // never finishes holds a server thread and a turn for good): the watchdog saves it.
    const HANG: Duration = Duration::from_secs(10);
    let current = std::sync::Arc::new(std::sync::Mutex::new((Instant::now(), Vec::<u8>::new())));
    {
        let current = current.clone();
        let (name, seed) = (target.name, args.seed);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let (started, input) = &*current.lock().unwrap_or_else(|e| e.into_inner());
                if started.elapsed() > HANG {
                    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("artifacts")
                        .join(name);
                    let path = dir.join(format!("hang-seed{seed}"));
                    let saved =
                        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
                    eprintln!(
                        "{name}: HANG: one run over {HANG:?} (seed {seed}); input {} ({saved:?})",
                        path.display()
                    );
                    std::process::exit(1);
                }
            }
        });
    }
    let mut rng = Rng(args.seed.max(1));
    let started = Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    let (mut runs, mut accepted, mut internal) = (0u64, 0u64, 0u64);
    let mut input = Vec::new();
    loop {
        if args.runs.is_some_and(|n| runs >= n)
            || (runs % 256 == 0 && deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }
        // The corpus as it is first, then mutations of it.
        input.clear();
        let i = runs as usize;
        if i < corpus.len() {
            input.extend_from_slice(&corpus[i]);
        } else {
            input.extend_from_slice(&corpus[rng.below(corpus.len())]);
            mutate(&mut rng, &mut input, &corpus, target);
        }
        runs += 1;
        {
            let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
            c.0 = Instant::now();
            c.1.clear();
            c.1.extend_from_slice(&input);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            setup.run(target.name, &input)
        })) {
            Ok(Outcome::Accepted) => accepted += 1,
            Ok(Outcome::Refused) => {}
            Ok(Outcome::Internal) => internal += 1,
            Err(_) => {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("artifacts")
                    .join(target.name);
                let path = dir.join(format!("crash-seed{}-run{runs}", args.seed));
                let saved =
                    std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &input));
                eprintln!(
                    "{}: CRASH at run {runs} (seed {}); input {} ({saved:?})",
                    target.name,
                    args.seed,
                    path.display()
                );
                return ExitCode::from(1);
            }
        }
        if runs % 1_000_000 == 0 {
            eprintln!(
                "{}: {runs} runs, {:.0} s",
                target.name,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {runs} runs in {secs:.1} s ({:.0}/s) from {seeds} corpus files, {accepted} accepted, {internal} internal errors, 0 crashes (seed {})",
        target.name,
        runs as f64 / secs,
        args.seed
    );
    ExitCode::SUCCESS
}
