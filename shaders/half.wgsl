// half.wgsl: reading 16-bit weights packed in pairs (the layout of matmul16.wgsl's header);
// prepended to matmul16.wgsl, embed16.wgsl and qkv.wgsl (src/gpu/wgsl.rs composes them).

// An f16 zero or subnormal (exponent bits 0) as f32: mantissa * 2^-24, exact and a normal f32, with
// the sign's bit. Used in place of unpack2x16float's result for those values, since WGSL lets an
// implementation flush subnormals.
fn f16_small(h: u32) -> f32 {
    return bitcast<f32>(((h & 0x8000u) << 16u) | bitcast<u32>(f32(h & 0x3ffu) * 5.9604644775390625e-8));
}

// The two values of a packed word, (element 2j, element 2j + 1).
fn unpack_pair(word: u32, fmt: u32) -> vec2<f32> {
    if (fmt == 0u) {
        let v = unpack2x16float(word);
        return vec2<f32>(select(v.x, f16_small(word & 0xffffu), (word & 0x7c00u) == 0u),
                         select(v.y, f16_small(word >> 16u), (word & 0x7c000000u) == 0u));
    }
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

// Element `col` (its parity picks the half) of a packed word.
fn packed_at(word: u32, col: u32, fmt: u32) -> f32 {
    let v = unpack_pair(word, fmt);
    return select(v.x, v.y, (col & 1u) == 1u);
}
