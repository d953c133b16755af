//! Barrier encrypt/decrypt throughput at typical secret sizes.
//!
//! `raw_aes_gcm` is the baseline measured in the same run: one AES-256-GCM seal with a fixed
//! nonce and no framing. The barrier's cost over it (fresh OS-random nonce, record header, AAD)
//! is the ratio of the two.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use arca_crypto::Keyring;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
const PATH: &[u8] = b"kv/data/app/db/password";

fn barrier(c: &mut Criterion) {
    let keyring = Keyring::generate().unwrap();
    let raw = Aes256Gcm::new(&[7u8; 32].into());
    let mut group = c.benchmark_group("barrier");
    for (size, name) in SIZES {
        let plaintext = vec![0x5au8; size];
        let record = keyring.encrypt(PATH, &plaintext).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw_aes_gcm_baseline", name), &plaintext, |b, p| {
            b.iter(|| {
                let mut buf = p.clone();
                raw.encrypt_in_place_detached(Nonce::from_slice(&[0u8; 12]), PATH, &mut buf).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("encrypt", name), &plaintext, |b, p| {
            b.iter(|| keyring.encrypt(PATH, p).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("decrypt", name), &record, |b, r| {
            b.iter(|| keyring.decrypt(PATH, r).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, barrier);
criterion_main!(benches);
