//! Token embedding lookup and the sinusoidal positional encoding.

/// out[t, :] = E[ids[t], :] * scale. E (V, C), ids (T,), out (T, C).
/// Ids are validated by the caller; an id out of range gives a zero row (as the GPU kernel does).
pub fn embedding(out: &mut [f32], table: &[f32], ids: &[u32], c: usize, scale: f32) {
    let v = table.len() / c;
    for (t, &id) in ids.iter().enumerate() {
        let row = &mut out[t * c..(t + 1) * c];
        if (id as usize) < v {
            for (o, &e) in row.iter_mut().zip(&table[id as usize * c..(id as usize + 1) * c]) {
                *o = e * scale;
            }
        } else {
            row.fill(0.0);
        }
    }
}

/// The sinusoidal table (max_len, C) as the seed's PositionalEncoding builds it in f32:
/// div_i = exp(2i * -(ln 10000 / C)), pe[p, 2i] = sin(p div_i), pe[p, 2i+1] = cos(p div_i).
pub fn sinusoidal_table(max_len: usize, c: usize) -> Vec<f32> {
    let mut pe = vec![0f32; max_len * c];
    // -(ln 10000) / C in double precision, then f32, as PyTorch multiplies an f32 tensor by a Python float
    let k = (-(10000f64.ln()) / c as f64) as f32;
    for i in (0..c).step_by(2) {
        let div = (i as f32 * k).exp();
        for p in 0..max_len {
            let ang = p as f32 * div;
            pe[p * c + i] = (ang as f64).sin() as f32;
            if i + 1 < c {
                pe[p * c + i + 1] = (ang as f64).cos() as f32;
            }
        }
    }
    pe
}

/// x[t, :] += table[start + t, :]. x (T, C), table (max_len, C).
pub fn add_rows(x: &mut [f32], table: &[f32], c: usize, start: usize) {
    for (t, row) in x.chunks_mut(c).enumerate() {
        let src = &table[(start + t) * c..(start + t + 1) * c];
        row.iter_mut().zip(src).for_each(|(a, b)| *a += *b);
    }
}
