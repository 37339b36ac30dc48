//! Start-up and eviction on a large cache: how long wharf takes to be ready to serve with 100,000
//! cached blobs (open and lock the index, count usage, clear staging, list blobs/ and reconcile it
//! with the index, bind the listener), and how fast eviction removes blobs.
//!
//! `cargo bench --bench startup` prints a table. `WHARF_BENCH_BLOBS` (default 100000) and
//! `WHARF_BENCH_BIG` (number of 1 MiB blobs for the bytes-per-second row, default 2048) size it.
//! The storage lives under target/ (a real disk, not tmpfs).

use std::path::Path;
use std::time::{Duration, Instant};

use wharf::cache::{Cache, Index, Options};
use wharf::oci::Digest;
use wharf::store::FsBlobStore;
use wharf::store::MetaStore as _;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `n` blobs of `size` bytes straight into a storage directory (files and index records),
/// as a long-running wharf would have left them.
fn plant(root: &Path, n: usize, size: usize, seed: u64) -> u64 {
    let store = FsBlobStore::open(root).unwrap();
    let index = Index::open(&root.join("index")).unwrap();
    let mut data = vec![0u8; size];
    let mut total = 0;
    for i in 0..n {
        let tag = (seed << 32 | i as u64).to_le_bytes();
        for (j, b) in data.iter_mut().enumerate() {
            *b = tag[j % 8] ^ (j as u8);
        }
        let digest = Digest::of(&data);
        let path = store.blob_path(&digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        index.insert_blob(&digest, size as u64).unwrap();
        total += size as u64;
    }
    index.flush_blocking().unwrap();
    total
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let blobs = env_usize("WHARF_BENCH_BLOBS", 100_000);
    let big = env_usize("WHARF_BENCH_BIG", 2048);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let root = dir.path().join("small");

    eprintln!("planting {blobs} blobs of 1 KiB in {} ...", root.display());
    let planted = Instant::now();
    plant(&root, blobs, 1024, 1);
    eprintln!("planted in {:.1} s", planted.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut open_times = Vec::new();
    let mut ready_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let cache = Cache::open(&root).unwrap();
        open_times.push(started.elapsed());
        assert_eq!(cache.usage().entries, blobs as u64);
        drop(cache);

        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[[upstream]]\nname = \"upstream.test\"\nurl = \"http://127.0.0.1:9\"\ndefault = true\ninsecure = true\n",
            root.display()
        );
        let config = wharf::Config::from_toml(&text, Path::new("bench.toml")).unwrap();
        let started = Instant::now();
        let running = runtime.block_on(wharf::start(config)).unwrap();
        ready_times.push(started.elapsed());
        runtime.block_on(running.shutdown()).unwrap();
    }

    // Evict half of the small blobs, then all of the big ones.
    let options = Options {
        max_size: Some(1),
        ..Options::default()
    };
    let cache = Cache::open_with(&root, &options).unwrap();
    let target = cache.usage().bytes / 2;
    let started = Instant::now();
    let small = runtime.block_on(cache.evict_to(target)).unwrap();
    let small_elapsed = started.elapsed();
    drop(cache);

    let big_root = dir.path().join("big");
    eprintln!("planting {big} blobs of 1 MiB ...");
    let big_bytes = plant(&big_root, big, 1 << 20, 2);
    let cache = Cache::open_with(&big_root, &options).unwrap();
    let started = Instant::now();
    let large = runtime.block_on(cache.evict_to(0)).unwrap();
    let big_elapsed = started.elapsed();
    assert_eq!(large.bytes, big_bytes);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("wharf start-up and eviction; {blobs} cached blobs; 2 cores (shared, noisy)");
    println!("{:<44} {:>12}", "metric", "value");
    println!("{}", "-".repeat(57));
    println!(
        "{:<44} {:>12.1}",
        "Cache::open with 100k blobs, median ms",
        ms(median(open_times.clone()))
    );
    println!(
        "{:<44} {:>12.1}",
        "Cache::open, slowest of 5, ms",
        ms(*open_times.iter().max().unwrap())
    );
    println!(
        "{:<44} {:>12.1}",
        "wharf::start to listening, median ms",
        ms(median(ready_times))
    );
    println!(
        "{:<44} {:>12.0}",
        "evict 1 KiB blobs, blobs/s",
        small.evicted as f64 / small_elapsed.as_secs_f64()
    );
    println!(
        "{:<44} {:>12}",
        "  (blobs evicted in that pass)", small.evicted
    );
    println!(
        "{:<44} {:>12.0}",
        "evict 1 MiB blobs, blobs/s",
        large.evicted as f64 / big_elapsed.as_secs_f64()
    );
    println!(
        "{:<44} {:>12.2}",
        "evict 1 MiB blobs, GB/s",
        large.bytes as f64 / big_elapsed.as_secs_f64() / 1e9
    );
}
