//! Tokens chained on the GPU: `GenConfig::tokens_per_submit` = K generation steps
//! recorded into one submission. The sampler writes each step's id into the ids buffer (and the
//! count of NaN/Inf logits beside it), the next step's embedding reads it from there, and the ids
//! and whatever else a step asked for (attention rows, the logits for the top candidates, MoE
//! routing) are copied into one staging buffer as the steps are recorded: one submission and one
//! map per batch. Decoder-only models keep two batches in flight: the next batch is recorded and
//! submitted before the current one's map is awaited, its first step reading the id the current
//! batch's last step sampled, on the GPU.
//!
//! What stays K = 1 (the step-by-step loop of model::run): CPU backends (nothing to chain), no KV
//! cache, logits sampled on the CPU (`gpu_sampling` off, an output constraint), inspection hooks,
//! a full context with a sliding window, and the encoder-decoder's first pass when it starts from
//! more than one token. A batch never runs past `max_new_tokens` or the context. The
//! encoder-decoder's masks are written once per batch, taking the batch's new tokens for non-PAD;
//! when a step samples EOS or PAD, the steps after it in the batch are dropped (EOS ends the
//! generation; after PAD the next batch starts from the host with the right mask), and it is not
//! pipelined, so nothing is computed past them.

use std::collections::VecDeque;

use crate::error::Result;
use crate::mask::PAD_ID;
use crate::model::backend::Backend;
use crate::model::config::Arch;
use crate::model::forward::{Feed, Logits, Model};
use crate::model::map_kind::MapKind;
use crate::model::run::{top_candidates, AttnMap, Generation, MoeRecord, StepOut, EOS_ID};
use crate::rng::step_uniform;

/// The chained state of a generation (model::run::Generation).
#[derive(Default)]
pub struct ChainState {
    /// tokens computed and read back, not handed out yet
    ready: VecDeque<Ready>,
    /// batches submitted, oldest first
    in_flight: VecDeque<Batch>,
}

/// One step of a batch: `t` new tokens at position `pos`, and the attention maps it reads back
/// (kind, layer, rows, cols).
struct PlannedStep {
    t: usize,
    pos: usize,
    maps: Vec<(MapKind, usize, usize, usize)>,
}

struct Batch {
    steps: Vec<PlannedStep>,
    top: usize,
    moe: bool,
}

struct Ready {
    id: u32,
    non_finite: u32,
    t: usize,
    pos: usize,
    attention: Vec<AttnMap>,
    top: Vec<(u32, f32)>,
    moe: Vec<MoeRecord>,
    batch: usize,
}

impl<B: Backend> Model<B> {
    /// Whether the next steps of `g` can be chained (see the module's list).
    fn chain_ok(&self, b: &B, g: &Generation) -> bool {
        let h = &self.hooks;
        let hooks_idle = h.ablate.iter().all(Option::is_none)
            && h.router.iter().all(Option::is_none)
            && h.capture.is_none()
            && h.mask_cells.is_empty()
            && h.cross_cells.is_empty();
        g.cfg.tokens_per_submit > 1
            && b.chains()
            && !g.done
            && g.cfg.gpu_sampling
            && g.cfg.kv_cache
            && g.cfg.constraint.is_none()
            && hooks_idle
    }

    /// The next token from a chained batch: Some(the step's answer), or None when this step goes
    /// through the K = 1 loop.
    pub(crate) async fn next_chained(&mut self, b: &mut B, g: &mut Generation) -> Result<Option<Option<StepOut>>> {
        if let Some(r) = g.chain.ready.pop_front() {
            return self.deliver(b, g, r).await.map(Some);
        }
        if g.chain.in_flight.is_empty() && !(self.chain_ok(b, g) && self.submit_batch(b, g)?) {
            return Ok(None);
        }
        // Decoder-only models: the next batch goes out before this one is read, so the GPU
        // computes it while the host waits for the map and hands out this batch's tokens.
        if g.cfg.pipeline && g.chain.in_flight.len() == 1 && self.cfg.arch != Arch::EncoderDecoder && self.chain_ok(b, g) {
            self.submit_batch(b, g)?;
        }
        let batch = g.chain.in_flight.pop_front().expect("a batch is in flight");
        let got = match b.queue_wait().await {
            Ok(got) => got,
            Err(e) => {
                g.done = true;
                return Err(e);
            }
        };
        self.receive(g, batch, got);
        match g.chain.ready.pop_front() {
            Some(r) => self.deliver(b, g, r).await.map(Some),
            None => Ok(None),
        }
    }

    /// Records and submits the next batch; false when no step is left for one (the K = 1 loop then
    /// says why the generation ends).
    fn submit_batch(&self, b: &mut B, g: &mut Generation) -> Result<bool> {
        let ctx = self.cfg.max_seq_len;
        let encdec = self.cfg.arch == Arch::EncoderDecoder;
        // the sequence's length once the batches in flight are handed out
        let pending: usize = g.chain.in_flight.iter().map(|b| b.steps.len()).sum();
        let len = g.ids.len() + pending;
        let device_first = pending > 0;
        let cached = if device_first { len - 1 } else { g.cached };
        let generated = len - g.start_len;
        let n = g.cfg.tokens_per_submit.min(g.cfg.max_new_tokens.saturating_sub(generated)).min(ctx.saturating_sub(len));
        // the encoder-decoder's batch mask is one row: its first step must be one token
        if n == 0 || (encdec && len - cached != 1) {
            return Ok(false);
        }
        let steps: Vec<PlannedStep> = (0..n)
            .map(|i| {
                let (t, pos) = if i == 0 { (len - cached, cached) } else { (1, len - 1 + i) };
                let maps = if g.cfg.attention {
                    self.map_specs(t, pos + t, pos).iter().map(|(_, kind, layer, r, c)| (*kind, *layer, *r, *c)).collect()
                } else {
                    vec![]
                };
                PlannedStep { t, pos, maps }
            })
            .collect();
        let heads = self.cfg.num_heads;
        let v = self.in_vocab();
        // MoE reads are t rows each
        let moe_values: usize = self.moe_requests(1).iter().map(|r| r.2).sum();
        let values: usize = steps
            .iter()
            .map(|s| {
                let maps: usize = s.maps.iter().map(|m| heads * m.2 * m.3).sum();
                let moe = if g.cfg.moe { moe_values * s.t } else { 0 };
                2 + maps + if g.cfg.top > 0 { v } else { 0 } + moe
            })
            .sum();
        b.queue_begin(values)?;
        let scratch = &self.state.dec;
        if encdec {
            // one mask row for every step: key j is visible unless it is PAD (the batch's own tokens
            // are taken for non-PAD; a PAD among them ends the batch there, see `deliver`), and the
            // row's length is each step's key count; the cross row is the source's padding
            let last = len - 1 + n;
            let row: Vec<f32> = (0..last).map(|j| if j < g.ids.len() && g.ids[j] == PAD_ID { 0.0 } else { 1.0 }).collect();
            let cross: Vec<f32> = self.src.iter().map(|&s| if s == PAD_ID { 0.0 } else { 1.0 }).collect();
            let (Some(mask), Some(cross_mask)) = (scratch.mask.as_ref(), scratch.cross_mask.as_ref()) else {
                return Err(crate::error::TfError::Internal("the decoder's mask buffers are missing".into()));
            };
            b.write_f32(mask, 0, &row)?;
            b.write_f32(cross_mask, 0, &cross)?;
        }
        if !device_first {
            b.write_u32(&scratch.ids, 0, &g.ids[cached..len])?;
        }
        let first_step = g.step + (len - g.ids.len()) as u64;
        for (i, s) in steps.iter().enumerate() {
            // the ids are on the device; these only give the count (and the known prefix)
            let known: Vec<u32> = (s.pos..s.pos + s.t).map(|j| g.ids.get(j).copied().unwrap_or(PAD_ID)).collect();
            if encdec {
                let tgt: Vec<u32> = (0..s.pos + s.t).map(|j| g.ids.get(j).copied().unwrap_or(PAD_ID)).collect();
                self.run_decoder_fed(b, &tgt, s.pos, Logits::Last, Feed::Device)?;
            } else {
                self.run_lm_fed(b, &known, s.pos, Logits::Last, Feed::Device)?;
            }
            // the sampled id goes where the next step's embedding reads it
            b.sample(&scratch.ids, &self.state.logits, 0, &g.cfg.sample, step_uniform(g.cfg.seed, first_step + i as u64))?;
            b.queue_read(&[(&scratch.ids, 0, 2)])?;
            if !s.maps.is_empty() {
                let specs = self.map_specs(s.t, s.pos + s.t, s.pos);
                let reqs: Vec<(&B::T, usize, usize)> = specs.iter().map(|(tensor, _, _, r, c)| (*tensor, 0, heads * r * c)).collect();
                b.queue_read(&reqs)?;
            }
            if g.cfg.top > 0 {
                b.queue_read(&[(&self.state.logits, 0, v)])?;
            }
            if g.cfg.moe {
                b.queue_read(&self.moe_requests(s.t))?;
            }
        }
        b.queue_submit()?;
        g.chain.in_flight.push_back(Batch { steps, top: g.cfg.top, moe: g.cfg.moe });
        Ok(true)
    }

    /// A batch's reads as tokens ready to hand out.
    fn receive(&self, g: &mut Generation, batch: Batch, got: Vec<Vec<u32>>) {
        let heads = self.cfg.num_heads;
        let n = batch.steps.len();
        let moe_reads = if batch.moe { self.moe_requests(1).len() } else { 0 };
        let mut got = got.into_iter();
        for s in batch.steps {
            let idv = got.next().unwrap_or_default();
            let attention = s
                .maps
                .iter()
                .map(|&(kind, layer, rows, cols)| AttnMap {
                    kind,
                    layer,
                    heads,
                    rows,
                    cols,
                    row_offset: s.pos,
                    data: bytemuck::cast_vec(got.next().unwrap_or_default()),
                })
                .collect();
            let non_finite = idv.get(1).copied().unwrap_or(0);
            let top = if batch.top > 0 {
                let logits: Vec<f32> = bytemuck::cast_vec(got.next().unwrap_or_default());
                if non_finite == 0 {
                    top_candidates(&logits, &g.cfg.sample, batch.top)
                } else {
                    vec![]
                }
            } else {
                vec![]
            };
            let moe = if batch.moe {
                let raw: Vec<Vec<u32>> = got.by_ref().take(moe_reads).collect();
                self.moe_records(&raw)
            } else {
                vec![]
            };
            let id = idv.first().copied().unwrap_or(0);
            g.chain.ready.push_back(Ready { id, non_finite, t: s.t, pos: s.pos, attention, top, moe, batch: n });
        }
    }

    /// Hands out one computed token, with the bookkeeping of the K = 1 loop.
    async fn deliver(&mut self, b: &mut B, g: &mut Generation, r: Ready) -> Result<Option<StepOut>> {
        if r.non_finite > 0 {
            g.done = true;
            g.chain.ready.clear();
            g.chain.in_flight.clear();
            b.queue_abandon();
            return Err(self.non_finite_error(b, r.t, r.pos, r.pos + r.t - 1).await);
        }
        g.cached = g.ids.len();
        g.ids.push(r.id);
        g.step += 1;
        if self.cfg.arch == Arch::EncoderDecoder {
            if r.id == EOS_ID {
                g.done = true;
                g.stop_reason = Some(crate::model::run::StopReason::Eos);
                g.chain.ready.clear(); // the tokens after EOS are not shown
            } else if r.id == PAD_ID {
                g.chain.ready.clear(); // the rest of the batch took this token for a non-PAD key
            }
        }
        if g.cfg.stop_ids.contains(&r.id) {
            // a foreign model's EOS (GenConfig::stop_ids), as the K = 1 loop stops on it
            g.done = true;
            g.stop_reason = Some(crate::model::run::StopReason::Eos);
            g.chain.ready.clear();
            g.chain.in_flight.clear();
            b.queue_abandon();
        }
        Ok(Some(StepOut { id: r.id, window_start: 0, attention: r.attention, top: r.top, moe: r.moe, batch: r.batch }))
    }
}
