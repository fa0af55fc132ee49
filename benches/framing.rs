//! The framing hot path: walking a buffer of server messages the way the
//! relay does, header by header.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pgmlcat::net::codec;

fn data_rows(n: usize, width: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    for _ in 0..n {
        buf.push(b'D');
        buf.extend_from_slice(&((4 + 2 + 4 + width) as u32).to_be_bytes());
        buf.extend_from_slice(&1u16.to_be_bytes());
        buf.extend_from_slice(&(width as u32).to_be_bytes());
        buf.extend(std::iter::repeat_n(b'x', width));
    }
    buf.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I");
    buf
}

fn scan(buf: &[u8]) -> usize {
    let mut pos = 0;
    let mut messages = 0;
    while let Ok(Some(h)) = codec::header(&buf[pos..], 1 << 30) {
        if buf.len() - pos < h.total {
            break;
        }
        pos += h.total;
        messages += 1;
    }
    messages
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    for (rows, width) in [(1, 8), (100, 8), (100, 1000)] {
        let buf = data_rows(rows, width);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(format!("scan {rows} rows x {width} B"), |b| {
            b.iter(|| scan(black_box(&buf)))
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
