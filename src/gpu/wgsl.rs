//! WGSL composition, in one place: every shader module's source is built here from common.wgsl,
//! the WGSL text of the Rust params structs it binds (declared once, in Rust, with [`params!`]),
//! and its shader files; and each kernel's storage bindings are read back from that source.
//!
//! Decision: the composition is plain Rust text assembly, not WESL or naga_oil.
//! - naga_oil 0.23 builds on naga 30 (wgpu 30's, so no second naga), but it composes at run time
//!   on naga's IR: the page's wasm, whose webgpu backend hands WGSL to the browser and carries no
//!   naga today, would gain naga's WGSL front end, validator and back end.
//! - wesl 0.6 (imports and conditional compilation) has its own parser and no naga, and could run
//!   in a build script so the wasm pays nothing; but it adds a build script and a parser crate tree
//!   to every build for what this crate needs: prepend a shared file (common.wgsl, half.wgsl, one of
//!   the two row sums) and the params structs. Nothing here is conditional beyond which file is
//!   prepended, which a Rust list says directly.
//!
//! The params structs are the single source of their layout: [`params!`] declares the
//! `#[repr(C)]` Pod struct and lists its fields with their WGSL types ([`Params::FIELDS`]), and
//! [`Params::wgsl`] writes the WGSL `struct` from that list, so a field has one name everywhere.
//!
//! A kernel's bind group layout is binding 0, the uniform params (a dynamic offset into the
//! arena: wgpu's automatic layouts cannot say that, so the layout is built by hand), then the
//! storage buffers its entry point uses, read-only where their `var<storage, read>` says so
//! ([`storage_bindings`], a scan of the composed source: naga's reflection would do the same but
//! is not in the page's wasm).

use std::collections::{BTreeMap, HashMap, HashSet};

/// common.wgsl: prepended to every module.
const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// The shader files, by name (each module's source lists the ones it is made of).
pub mod files {
    pub const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
    pub const GEMV: &str = include_str!("../../shaders/gemv.wgsl");
    pub const ROWS: &str = include_str!("../../shaders/rows.wgsl");
    pub const GEMV_SG: &str = include_str!("../../shaders/gemv_sg.wgsl");
    pub const HALF: &str = include_str!("../../shaders/half.wgsl");
    pub const QKV: &str = include_str!("../../shaders/qkv.wgsl");
    pub const MATMUL16: &str = include_str!("../../shaders/matmul16.wgsl");
    pub const ATTENTION: &str = include_str!("../../shaders/attention.wgsl");
    pub const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
    pub const ROWSUM: &str = include_str!("../../shaders/rowsum.wgsl");
    pub const ROWSUM1: &str = include_str!("../../shaders/rowsum1.wgsl");
    pub const NORM: &str = include_str!("../../shaders/norm.wgsl");
    pub const ADDNORM: &str = include_str!("../../shaders/addnorm.wgsl");
    pub const ROPE: &str = include_str!("../../shaders/rope.wgsl");
    pub const EMBED: &str = include_str!("../../shaders/embed.wgsl");
    pub const SAMPLE: &str = include_str!("../../shaders/sample.wgsl");
    pub const MOE: &str = include_str!("../../shaders/moe.wgsl");
    pub const MOE_BW: &str = include_str!("../../shaders/moe_bw.wgsl");
    pub const EMBED16: &str = include_str!("../../shaders/embed16.wgsl");
    pub const MATMUL_BW: &str = include_str!("../../shaders/matmul_bw.wgsl");
    pub const NORM_BW: &str = include_str!("../../shaders/norm_bw.wgsl");
    pub const ACT_BW: &str = include_str!("../../shaders/act_bw.wgsl");
    pub const EMBED_BW: &str = include_str!("../../shaders/embed_bw.wgsl");
    pub const ATTENTION_BW: &str = include_str!("../../shaders/attention_bw.wgsl");
    pub const LOSS: &str = include_str!("../../shaders/loss.wgsl");
    pub const OPTIM: &str = include_str!("../../shaders/optim.wgsl");
}

/// A params struct declared with [`params!`]: its fields as (name, Rust type as written).
pub trait Params: bytemuck::Pod {
    const NAME: &'static str;
    const FIELDS: &'static [(&'static str, &'static str)];

    /// The WGSL `struct` of these params. A `[u32; N]` padding field becomes N scalars
    /// `name0`.. (a uniform array would need a 16-byte stride).
    fn wgsl() -> String {
        let mut s = format!("struct {} {{\n", Self::NAME);
        let mut words = 0;
        for &(name, ty) in Self::FIELDS {
            match ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')).and_then(|t| t.split_once(';')) {
                Some((elem, n)) => {
                    let n: usize = n.trim().parse().unwrap_or(0);
                    for i in 0..n {
                        s.push_str(&format!("    {name}{i}: {},\n", elem.trim()));
                    }
                    words += n;
                }
                None => {
                    s.push_str(&format!("    {name}: {ty},\n"));
                    words += 1;
                }
            }
        }
        assert_eq!(words * 4, std::mem::size_of::<Self>(), "{}: the WGSL fields must cover the Rust struct", Self::NAME);
        s.push_str("};\n");
        s
    }
}

/// Declares a uniform params struct once: the `#[repr(C)]` Pod struct and its [`Params`] impl
/// (its WGSL text). Fields are 4-byte scalars (`u32`, `f32`) or `[u32; N]` padding; the size is
/// checked to be a multiple of 16 bytes that fits one parameter slot.
#[macro_export]
macro_rules! params {
    ($(#[$sm:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:tt),* $(,)? }) => {
        $(#[$sm])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::gpu::wgsl::Params for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [(&'static str, &'static str)] = &[$((stringify!($f), stringify!($t))),*];
        }
        const _: () = assert!(
            std::mem::size_of::<$name>().is_multiple_of(16)
                && std::mem::size_of::<$name>() as u64 <= $crate::gpu::context::PARAM_SLOT
        );
    };
}

/// One shader module's source: common.wgsl, then the params structs, then `parts` in order.
pub fn source(params: &[String], parts: &[&str]) -> String {
    let mut s = String::from(COMMON);
    for p in params.iter().map(String::as_str).chain(parts.iter().copied()) {
        s.push('\n');
        s.push_str(p);
    }
    s
}

/// Creates the shader module for `source(params, parts)`.
pub fn module(device: &wgpu::Device, name: &str, params: &[String], parts: &[&str]) -> Module {
    let src = source(params, parts);
    let module = device
        .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(src.as_str().into()) });
    Module { module, src }
}

/// A compiled shader module with the source it came from (for [`storage_bindings`]).
pub struct Module {
    pub module: wgpu::ShaderModule,
    pub src: String,
}

/// The storage bindings 1.. that entry point `entry` of `src` uses (itself or through the
/// functions it calls), in binding order: whether each is read-only. A binding that several
/// variables alias (a vec4 view and a scalar view) is read-only unless one it uses is
/// `read_write`. Bindings between 1 and the highest used that the entry leaves unused are listed
/// read-only, so the bind group keeps its positional buffers.
pub fn storage_bindings(src: &str, entry: &str) -> Vec<bool> {
    let code = strip_comments(src);
    let vars = storage_vars(&code);
    let fns = functions(&code);
    let mut used: BTreeMap<u32, bool> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut todo = vec![entry.to_string()];
    while let Some(f) = todo.pop() {
        if !seen.insert(f.clone()) {
            continue;
        }
        for id in idents(fns.get(f.as_str()).copied().unwrap_or("")) {
            if let Some(&(binding, ro)) = vars.get(id) {
                let e = used.entry(binding).or_insert(true);
                *e = *e && ro;
            } else if fns.contains_key(id) {
                todo.push(id.to_string());
            }
        }
    }
    let last = used.keys().next_back().copied().unwrap_or(0);
    (1..=last).map(|b| used.get(&b).copied().unwrap_or(true)).collect()
}

fn strip_comments(src: &str) -> String {
    src.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn idents(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty())
}

/// `@binding(N) var<storage, read|read_write> name`: name -> (N, read-only).
fn storage_vars(code: &str) -> HashMap<&str, (u32, bool)> {
    let mut vars = HashMap::new();
    for decl in code.split("@binding(").skip(1) {
        let Some((n, rest)) = decl.split_once(')') else { continue };
        let Some(rest) = rest.trim_start().strip_prefix("var<storage") else { continue };
        let Some((access, rest)) = rest.split_once('>') else { continue };
        let ro = !access.contains("read_write");
        if let (Ok(n), Some(name)) = (n.trim().parse(), idents(rest).next()) {
            vars.insert(name, (n, ro));
        }
    }
    vars
}

/// Top-level `fn name(...) { body }`: name -> the text from its parameters to its closing brace.
fn functions(code: &str) -> HashMap<&str, &str> {
    let mut fns = HashMap::new();
    let mut depth = 0usize;
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b'f' if depth == 0 && code[i..].starts_with("fn ") && (i == 0 || !is_ident(bytes[i - 1])) => {
                let name = idents(&code[i + 3..]).next().unwrap_or("");
                let Some(open) = code[i..].find('{').map(|o| i + o) else { break };
                let mut d = 0usize;
                let mut end = code.len();
                for (j, c) in code[open..].char_indices() {
                    match c {
                        '{' => d += 1,
                        '}' => {
                            d -= 1;
                            if d == 0 {
                                end = open + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                fns.insert(name, &code[i + 3 + name.len()..end]);
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    fns
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_structs_write_their_wgsl() {
        let m = crate::gpu::matmul::MatmulParams::wgsl();
        assert!(
            m.starts_with("struct MatmulParams {\n    m: u32,\n") && m.contains("    wfmt: u32,\n    ldo: u32,\n    b_offset: u32,\n"),
            "{m}"
        );
        let e = crate::gpu::embed::EmbedParams::wgsl();
        assert!(e.contains("    scale: f32,\n    wfmt: u32,\n    _p0: u32,\n    _p1: u32,\n};"), "{e}");
    }

    #[test]
    fn bindings_follow_the_entry_and_its_calls() {
        let src = "@group(0) @binding(1) var<storage, read> a: array<f32>;\n\
                   @group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;\n\
                   @group(0) @binding(2) var<storage, read_write> b: array<f32>; // out\n\
                   @group(0) @binding(2) var<storage, read> b_in: array<f32>;\n\
                   @group(0) @binding(3) var<storage, read_write> c: array<f32>;\n\
                   fn helper(i: u32) -> f32 { return a4[i].x; }\n\
                   @compute @workgroup_size(1) fn one() { b[0] = helper(0u); }\n\
                   @compute @workgroup_size(1) fn two() { c[0] = b_in[0] + a[0]; }\n";
        assert_eq!(storage_bindings(src, "one"), vec![true, false]);
        assert_eq!(storage_bindings(src, "two"), vec![true, true, false]);
    }
}
