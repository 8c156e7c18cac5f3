//! Why a decode step on llvmpipe costs what it costs (and why K = 8 chained tokens gain little over K = 1 there): one
//! one-row product y = W x (W (N, K)) in different layouts and launch shapes, each dispatched `reps`
//! times in one submission (best of 5), and once per submission with a map (the round trip K = 8
//! removes). Microseconds per dispatch and the rate in MAC/s, as JSON.
//!
//! Mesa's llvmpipe (22.x) runs 8 invocations as the lanes of a 256-bit vector and loads a storage
//! buffer one lane at a time, with a bounds check per element, even when every lane reads the same
//! address; a uniform buffer is read with a gather. So the layout (lanes reading adjacent or strided
//! addresses), the launch shape and a uniform binding are measured against each other here.
//!   cargo run --release --example bench_gemv_layouts [N K]
use tinyformer::gpu::Gpu;
use wgpu::util::DeviceExt;

const HEAD: &str = "struct P { n: u32, k: u32, pad0: u32, pad1: u32 }\n@group(0) @binding(0) var<uniform> p: P;\n";
/// the largest W a uniform binding takes here (64 KiB, the WebGPU default limit)
const UBO_FLOATS: usize = 16384;

struct Variant {
    name: &'static str,
    what: &'static str,
    /// x, W, y declarations
    decl: &'static str,
    body: &'static str,
    /// outputs per workgroup (0: one workgroup for all)
    per_group: u32,
    uniform_w: bool,
}

/// rows.wgsl's rows4 in short: one invocation per output walking K with vec4 loads of x and of W's row
const ROWS_NK: &str = "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let k4 = p.k / 4u; let n = g.x; if (n >= p.n) { return; }
  var a = vec4<f32>(0.0);
  for (var q = 0u; q < k4; q++) { a = fma(x[q], w[n * k4 + q], a); }
  y[n] = a.x + a.y + a.z + a.w;
}";

fn variants() -> Vec<Variant> {
    let ssbo_nk = "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\n@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;\n@group(0) @binding(3) var<storage, read_write> y: array<f32>;\n";
    let ssbo_kn = ssbo_kn_decl();
    let ubo_nk = "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\n@group(0) @binding(2) var<uniform> w: array<vec4<f32>, 4096>;\n@group(0) @binding(3) var<storage, read_write> y: array<f32>;\n";
    vec![
        Variant {
            name: "rows_nk_wg64",
            what: "one invocation per output over W (N, K) read as vec4, workgroups of 64 (rows.wgsl's rows4, the default on CPU-type adapters)",
            decl: ssbo_nk,
            body: ROWS_NK,
            per_group: 64,
            uniform_w: false,
        },
        Variant {
            name: "transposed_kn_wg16",
            what: "W transposed to (K, N): one invocation per 4 outputs, adjacent lanes read adjacent vec4s",
            decl: ssbo_kn,
            body: "@compute @workgroup_size(16) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let n4 = p.n / 4u; let n = g.x; if (n >= n4) { return; }
  var a = vec4<f32>(0.0);
  for (var q = 0u; q < p.k; q++) { a = fma(vec4<f32>(x[q]), w[q * n4 + n], a); }
  y[n] = a;
}",
            per_group: 64,
            uniform_w: false,
        },
        Variant {
            name: "one_workgroup_nk_256",
            what: "the whole product in one workgroup of 256 (what a one-dispatch-per-layer kernel would do)",
            decl: ssbo_nk,
            body: "@compute @workgroup_size(256) fn main(@builtin(local_invocation_index) l: u32) {
  let k4 = p.k / 4u;
  for (var n = l; n < p.n; n += 256u) {
    var a = vec4<f32>(0.0);
    for (var q = 0u; q < k4; q++) { a = fma(x[q], w[n * k4 + q], a); }
    y[n] = a.x + a.y + a.z + a.w;
  }
}",
            per_group: 0,
            uniform_w: false,
        },
        Variant {
            name: "one_workgroup_transposed_64",
            what: "one workgroup of 64 over W (K, N), 4 outputs per invocation",
            decl: ssbo_kn,
            body: "@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) l: u32) {
  let n4 = p.n / 4u;
  for (var n = l; n < n4; n += 64u) {
    var a = vec4<f32>(0.0);
    for (var q = 0u; q < p.k; q++) { a = fma(vec4<f32>(x[q]), w[q * n4 + n], a); }
    y[n] = a;
  }
}",
            per_group: 0,
            uniform_w: false,
        },
        Variant {
            name: "one_invocation_serial",
            what: "one invocation computes every output (every address uniform)",
            decl: ssbo_nk,
            body: "@compute @workgroup_size(1) fn main() {
  let k4 = p.k / 4u;
  for (var n = 0u; n < p.n; n++) {
    var a = vec4<f32>(0.0);
    for (var q = 0u; q < k4; q++) { a = fma(x[q], w[n * k4 + q], a); }
    y[n] = a.x + a.y + a.z + a.w;
  }
}",
            per_group: 0,
            uniform_w: false,
        },
        Variant {
            name: "rows_nk16_wg64",
            what: "rows_nk_wg64 over W kept 16-bit (f16 pairs packed in u32: 8 weights per vec4 load, half the loads)",
            decl: "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\n@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;\n@group(0) @binding(3) var<storage, read_write> y: array<f32>;\n",
            body: "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let k4 = p.k / 4u; let k8 = p.k / 8u; let n = g.x; if (n >= p.n) { return; }
  var a = vec4<f32>(0.0);
  for (var q = 0u; q < k8; q++) {
    let u = w[n * k8 + q];
    a = fma(x[2u * q], vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y)), a);
    a = fma(x[2u * q + 1u], vec4<f32>(unpack2x16float(u.z), unpack2x16float(u.w)), a);
  }
  y[n] = a.x + a.y + a.z + a.w;
}",
            per_group: 64,
            uniform_w: false,
        },
        Variant {
            name: "rows_nk_wg64_uniform_w",
            what: "rows_nk_wg64 with W in a uniform binding (at most 64 KiB)",
            decl: ubo_nk,
            body: ROWS_NK,
            per_group: 64,
            uniform_w: true,
        },
    ]
}

fn main() -> tinyformer::Result<()> {
    let args: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let gpu = pollster::block_on(Gpu::new())?;
    let d = &gpu.device;
    let mut shapes = vec![(512u32, 192u32), (64, 256)];
    if let (Some(&n), Some(&k)) = (args.first(), args.get(1)) {
        shapes = vec![(n, k)];
    }
    let reps = 100;
    let mut results = vec![];
    for (n, k) in shapes {
        if n % 4 != 0 || k % 8 != 0 {
            return Err(tinyformer::TfError::Input(format!("N must be a multiple of 4 and K of 8, got {n} and {k}")));
        }
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
        // the reference product, for both layouts
        let want: Vec<f32> = (0..n as usize).map(|r| (0..k as usize).map(|c| x[c] * w[r * k as usize + c]).sum()).collect();
        let wt: Vec<f32> = (0..(n * k) as usize).map(|i| w[(i % n as usize) * k as usize + i / n as usize]).collect();
        let buf = |data: &[f32], usage| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(data), usage })
        };
        let xb = buf(&x, wgpu::BufferUsages::STORAGE);
        let pad = |v: &[f32]| {
            let mut v = v.to_vec();
            v.resize(v.len().max(UBO_FLOATS), 0.0);
            v
        };
        let wb = buf(&pad(&w), wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::UNIFORM);
        let wtb = buf(&wt, wgpu::BufferUsages::STORAGE);
        // W rounded to f16, two to a u32 (the low half first, as unpack2x16float reads them); the reference below
        // is the f32 product, so this variant's error includes the rounding (k = 256 terms of |w| <= 0.1)
        let w16: Vec<u32> =
            w.chunks(2).map(|c| half::f16::from_f32(c[0]).to_bits() as u32 | (half::f16::from_f32(c[1]).to_bits() as u32) << 16).collect();
        let w16b = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&w16),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let yb = buf(&vec![0.0; n as usize], wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
        let pb = buf(bytemuck::cast_slice(&[n, k, 0, 0]), wgpu::BufferUsages::UNIFORM);
        let rb = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: n as u64 * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut row = serde_json::Map::new();
        for v in variants() {
            if v.uniform_w && (n * k) as usize > UBO_FLOATS {
                continue;
            }
            let m = d.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(v.name),
                source: wgpu::ShaderSource::Wgsl(format!("{HEAD}{}{}", v.decl, v.body).into()),
            });
            let pl = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(v.name),
                layout: None,
                module: &m,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let transposed = v.decl == ssbo_kn_decl();
            let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pl.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: pb.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: xb.as_entire_binding() },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: if v.name == "rows_nk16_wg64" {
                            w16b.as_entire_binding()
                        } else if transposed {
                            wtb.as_entire_binding()
                        } else if v.uniform_w {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &wb,
                                offset: 0,
                                size: wgpu::BufferSize::new(UBO_FLOATS as u64 * 4),
                            })
                        } else {
                            wb.as_entire_binding()
                        },
                    },
                    wgpu::BindGroupEntry { binding: 3, resource: yb.as_entire_binding() },
                ],
            });
            let groups = if v.per_group == 0 { 1 } else { n.div_ceil(v.per_group) };
            // `per_submit` dispatches in each of `submits` submissions, each waited for with a map
            let run = |per_submit: usize, submits: usize| -> Vec<f32> {
                let mut got = vec![];
                for _ in 0..submits {
                    let mut e = d.create_command_encoder(&Default::default());
                    {
                        let mut cp = e.begin_compute_pass(&Default::default());
                        cp.set_pipeline(&pl);
                        cp.set_bind_group(0, &bg, &[]);
                        for _ in 0..per_submit {
                            cp.dispatch_workgroups(groups, 1, 1);
                        }
                    }
                    e.copy_buffer_to_buffer(&yb, 0, &rb, 0, n as u64 * 4);
                    gpu.queue.submit([e.finish()]);
                    rb.slice(..).map_async(wgpu::MapMode::Read, |_| {});
                    let _ = d.poll(wgpu::PollType::wait_indefinitely());
                    if let Ok(view) = rb.slice(..).get_mapped_range() {
                        got = bytemuck::cast_slice(&view).to_vec();
                    }
                    rb.unmap();
                }
                got
            };
            let got = run(1, 1);
            // each variant must compute the product (f32 sums in another order: 1e-4 relative; f16 weights: 2e-3)
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
            let tol = if v.name == "rows_nk16_wg64" { 2e-3 } else { 1e-4 };
            if err > tol {
                return Err(tinyformer::TfError::Internal(format!("{}: wrong product (max error {err})", v.name)));
            }
            let best = |per: usize, subs: usize| {
                (0..5)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        run(per, subs);
                        t.elapsed().as_secs_f64() * 1e6 / (per * subs) as f64
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let us = best(reps, 1);
            let us_rt = best(1, 20);
            row.insert(
                v.name.into(),
                serde_json::json!({
                    "what": v.what,
                    "us_per_dispatch": (us * 10.0).round() / 10.0,
                    "gmac_per_s": ((n * k) as f64 / us / 1e3 * 1000.0).round() / 1000.0,
                    "us_per_submission_with_map": (us_rt * 10.0).round() / 10.0,
                }),
            );
        }
        results.push(serde_json::json!({"n": n, "k": k, "variants": row}));
    }
    let launch = launch_cost(&gpu, reps);
    let out = serde_json::json!({"bench": "gemv layouts", "adapter": gpu.summary.name, "driver": gpu.summary.driver, "reps_per_submission": reps, "shapes": results, "launch_us": launch});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

fn ssbo_kn_decl() -> &'static str {
    "@group(0) @binding(1) var<storage, read> x: array<f32>;\n@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;\n@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;\n"
}

/// The fixed cost of an op: an almost empty kernel (one workgroup of 64 writing one value), `reps` dispatches in
/// one submission, with nothing rebound between them, with its bind group set again before each (as the decode
/// loop does: one bind group per op, a dynamic offset into the params arena), and alternating two pipelines.
fn launch_cost(gpu: &Gpu, reps: usize) -> serde_json::Value {
    let d = &gpu.device;
    let src = "@group(0) @binding(0) var<uniform> p: vec4<u32>;\n@group(0) @binding(1) var<storage, read_write> y: array<u32>;\n\
               @compute @workgroup_size(64) fn main(@builtin(local_invocation_index) l: u32) { if (l == 0u) { y[0] = y[0] + p.x; } }";
    let m = d.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("empty"), source: wgpu::ShaderSource::Wgsl(src.into()) });
    let layout = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: true, min_binding_size: None },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
        ],
    });
    let pl =
        d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor { label: None, bind_group_layouts: &[Some(&layout)], immediate_size: 0 });
    let pipe = || {
        d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: Some(&pl),
            module: &m,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (p1, p2) = (pipe(), pipe());
    let params = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256 * 128,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let y =
        d.create_buffer(&wgpu::BufferDescriptor { label: None, size: 16, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
    let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: 0,
                    size: wgpu::BufferSize::new(16),
                }),
            },
            wgpu::BindGroupEntry { binding: 1, resource: y.as_entire_binding() },
        ],
    });
    // mode 0: bound once; 1: the bind group set before each dispatch (another dynamic offset); 2: and the pipeline
    let run = |mode: usize| {
        let t = std::time::Instant::now();
        let mut e = d.create_command_encoder(&Default::default());
        {
            let mut cp = e.begin_compute_pass(&Default::default());
            cp.set_pipeline(&p1);
            cp.set_bind_group(0, &bg, &[0]);
            for i in 0..reps {
                if mode == 2 {
                    cp.set_pipeline(if i % 2 == 0 { &p1 } else { &p2 });
                }
                if mode >= 1 {
                    cp.set_bind_group(0, &bg, &[(i % 128) as u32 * 256]);
                }
                cp.dispatch_workgroups(1, 1, 1);
            }
        }
        gpu.queue.submit([e.finish()]);
        let _ = d.poll(wgpu::PollType::wait_indefinitely());
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    };
    let best = |mode| (0..5).map(|_| run(mode)).fold(f64::INFINITY, f64::min);
    let r = |v: f64| (v * 100.0).round() / 100.0;
    serde_json::json!({
        "dispatch_only": r(best(0)),
        "bind_group_set_before_each": r(best(1)),
        "pipeline_and_bind_group_set_before_each": r(best(2)),
    })
}
