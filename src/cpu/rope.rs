//! Rotary position embedding on adjacent pairs (x[2i], x[2i+1]), as seed 004 does with complex
//! numbers: (x0 + i x1) * e^{i pos freq_i}, freq_i = theta^(-2i/HS).

/// The (cos, sin) table, (max_pos, HS/2, 2) interleaved, computed like PyTorch does in f32:
/// freqs = 1 / theta^(arange(0, HS, 2)/HS) in f32, angle = pos * freq in f32, then cos/sin.
pub fn rope_table(max_pos: usize, hs: usize, theta: f32) -> Vec<f32> {
    rope_table_partial(max_pos, hs, hs, theta)
}

/// [`rope_table`] for a partial rotary embedding (GPT-NeoX's `rotary_pct`): the first `rot` dims of
/// each head rotate with freq_i = theta^(-2i/rot), as transformers computes them over the rotary
/// dims only; the pairs past `rot` get (cos 1, sin 0), so a rotation passes them through exactly
/// (x0 * 1 - x1 * 0 = x0): every RoPE kernel and its backward serve partial rotary unchanged.
pub fn rope_table_partial(max_pos: usize, hs: usize, rot: usize, theta: f32) -> Vec<f32> {
    let half = hs / 2;
    let mut t = vec![0f32; max_pos * half * 2];
    for pair in t.chunks_exact_mut(2) {
        pair[0] = 1.0;
    }
    for i in 0..rot.min(hs) / 2 {
        let expo = (2 * i) as f32 / rot as f32;
        let freq = 1.0f32 / theta.powf(expo);
        for p in 0..max_pos {
            let ang = p as f32 * freq;
            t[(p * half + i) * 2] = (ang as f64).cos() as f32;
            t[(p * half + i) * 2 + 1] = (ang as f64).sin() as f32;
        }
    }
    t
}

/// Rotates x in place. x (T, NH, HS) with rows of `row_stride` floats starting at `offset`
/// (so q and k can be rotated inside a fused QKV buffer); token t is at position start_pos + t.
pub fn rope(x: &mut [f32], table: &[f32], t_len: usize, nh: usize, hs: usize, start_pos: usize, row_stride: usize, offset: usize) {
    let half = hs / 2;
    for t in 0..t_len {
        let pos = start_pos + t;
        for h in 0..nh {
            for i in 0..half {
                let c = table[(pos * half + i) * 2];
                let s = table[(pos * half + i) * 2 + 1];
                let base = offset + t * row_stride + h * hs + 2 * i;
                let (x0, x1) = (x[base], x[base + 1]);
                x[base] = x0 * c - x1 * s;
                x[base + 1] = x0 * s + x1 * c;
            }
        }
    }
}
