//! `fcgi_shim::ThreadCache` as this test binary's global allocator: threads allocate,
//! grow, shrink and free blocks of every cached size and past them, hand blocks to
//! each other, and exit (their caches are handed back), while the main thread goes on
//! allocating after them. Every byte is checked. A separate test target, since a
//! global allocator is per binary; it makes no system calls of its own, so it also
//! runs under Miri (RELIABILITY.md: `cargo +nightly miri test --test thread_cache`).

use std::sync::mpsc;

#[global_allocator]
static ALLOC: fcgi_shim::ThreadCache = fcgi_shim::ThreadCache::new();

/// A block of `size` bytes, each one telling its owner and position.
fn filled(owner: u8, size: usize) -> Vec<u8> {
    (0..size).map(|i| owner ^ (i as u8)).collect()
}

fn intact(owner: u8, v: &[u8]) -> bool {
    v.iter().enumerate().all(|(i, &b)| b == owner ^ (i as u8))
}

#[test]
fn blocks_survive_reuse_across_threads_and_thread_exits() {
    // Fewer and smaller under Miri, which runs this about a million times slower.
    let (threads, rounds) = if cfg!(miri) { (3u8, 40) } else { (8u8, 4000) };
    let (tx, rx) = mpsc::channel::<(u8, Vec<u8>)>();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                for i in 0..rounds {
                    // Every class (1 to 4096 bytes) and some sizes past the cache.
                    let size = 1 + (i * 131 + usize::from(t) * 17) % 5200;
                    let mut v = filled(t, size);
                    match i % 4 {
                        0 => tx.send((t, v)).unwrap(),
                        1 => {
                            // Grow within and across classes, then shrink.
                            v.extend(filled(t, 40).iter().map(|_| 0));
                            v.truncate(size);
                            v.shrink_to_fit();
                            assert!(intact(t, &v));
                            kept.push(v);
                        }
                        2 => drop(v),
                        _ => {
                            let b: Box<[u8]> = v.into_boxed_slice();
                            assert!(intact(t, &b));
                        }
                    }
                    if kept.len() > 16 {
                        let v = kept.remove(usize::from(t) % kept.len());
                        assert!(intact(t, &v));
                    }
                }
                kept.iter().all(|v| intact(t, v))
            })
        })
        .collect();
    drop(tx);
    // Blocks allocated on the workers are checked and freed here, into this thread's
    // cache, while the workers allocate on.
    let mut received = 0;
    for (owner, v) in rx {
        assert!(
            intact(owner, &v),
            "a block of {} bytes from thread {owner}",
            v.len()
        );
        received += 1;
    }
    for w in workers {
        assert!(w.join().unwrap());
    }
    assert_eq!(received, usize::from(threads) * rounds / 4);
    // The workers are gone (their caches handed back); this thread reuses its own.
    let after: Vec<Vec<u8>> = (0..200).map(|i| filled(7, 1 + i * 21)).collect();
    assert!(after.iter().all(|v| intact(7, v)));
}
