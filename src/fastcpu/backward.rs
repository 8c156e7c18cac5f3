//! `Train` for the fast CPU backend: the kernels of `train.rs` (f32 SIMD, twins in
//! `crate::cpu::backward`) on the tensors' host data, with the reference's guards; the attention
//! (per sequence) and the matmul backward (dX = dY W on the packed GEMM over W^T's panels, packed
//! from W directly; dW = dY^T X in place, split over dW's rows) on the backend's threads. The
//! cheap ops (positions, rope, the MoE routing, fill, copy) stay on the reference loops
//! (`cpu::train::host`).

use crate::cpu::backward::check_attn;
use crate::cpu::train::host;
use crate::error::{Result, TfError};
use crate::fastcpu::matmul::{self, Packed};
use crate::fastcpu::{train as k, FastCpuBackend, FastTensor};
use crate::model::backend::tensor::need;
use crate::ops::{EwOp, RopeShape};
use crate::train::ops::{AdamStep, BatchAttn, Train};

/// The written parameter: a write drops a fast tensor's packed panels.
fn touched(t: &FastTensor) -> &FastTensor {
    t.unpack();
    t
}

impl Train for FastCpuBackend {
    fn attention_batch(
        &mut self,
        out: &FastTensor,
        probs: &FastTensor,
        q: &FastTensor,
        k: &FastTensor,
        v: &FastTensor,
        keys: Option<&FastTensor>,
        s: &BatchAttn,
    ) -> Result<()> {
        if s.b == 0 || s.tq == 0 || s.tk == 0 || s.nh == 0 {
            return host::attention_batch(
                out.host()?,
                probs.host()?,
                q.host()?,
                k.host()?,
                v.host()?,
                keys.map(|m| m.host()).transpose()?,
                s,
            );
        }
        let op = "attention_batch";
        let (qd, kd, vd) = (q.host()?.f32s(op)?, k.host()?.f32s(op)?, v.host()?.f32s(op)?);
        let md = keys.map(|m| m.host().and_then(|h| h.f32s(op))).transpose()?;
        let (mut od, mut pd) = (out.host()?.f32s_mut(op)?, probs.host()?.f32s_mut(op)?);
        check_attn(op, s, qd.len().min(od.len()), &[kd.len(), vd.len()], pd.len(), md.as_ref().map(|m| m.len()))?;
        let (nq, nk, np, _) = s.sizes();
        let (per_q, per_k, per_p) = (nq / s.b, nk / s.b, np / s.b);
        let items: Vec<_> = od[..nq].chunks_mut(per_q).zip(pd[..np].chunks_mut(per_p)).enumerate().collect();
        let (qd, kd, vd, md) = (&qd[..nq], &kd[..nk], &vd[..nk], md.as_deref());
        self.threads.each(items, 4 * np * s.hs, |(b, (o, p))| {
            let (qs, ks, vs) = (&qd[b * per_q..][..per_q], &kd[b * per_k..][..per_k], &vd[b * per_k..][..per_k]);
            k::attention_forward_seq(o, p, qs, ks, vs, md.map(|m| &m[b * s.tk..][..s.tk]), s);
        });
        Ok(())
    }
    fn attention_backward(
        &mut self,
        dq: &FastTensor,
        dk: &FastTensor,
        dv: &FastTensor,
        dout: &FastTensor,
        probs: &FastTensor,
        q: &FastTensor,
        k: &FastTensor,
        v: &FastTensor,
        s: &BatchAttn,
    ) -> Result<()> {
        if s.b == 0 || s.tq == 0 || s.tk == 0 || s.nh == 0 {
            return host::attention_backward(
                dq.host()?,
                dk.host()?,
                dv.host()?,
                dout.host()?,
                probs.host()?,
                q.host()?,
                k.host()?,
                v.host()?,
                s,
            );
        }
        let op = "attention_backward";
        let (dod, pd, qd, kd, vd) =
            (dout.host()?.f32s(op)?, probs.host()?.f32s(op)?, q.host()?.f32s(op)?, k.host()?.f32s(op)?, v.host()?.f32s(op)?);
        let (mut dqd, mut dkd, mut dvd) = (dq.host()?.f32s_mut(op)?, dk.host()?.f32s_mut(op)?, dv.host()?.f32s_mut(op)?);
        let qo = qd.len().min(dqd.len()).min(dod.len());
        check_attn(op, s, qo, &[kd.len(), vd.len(), dkd.len(), dvd.len()], pd.len(), None)?;
        let (nq, nk, np, _) = s.sizes();
        let (per_q, per_k, per_p) = (nq / s.b, nk / s.b, np / s.b);
        let items: Vec<_> =
            dqd[..nq].chunks_mut(per_q).zip(dkd[..nk].chunks_mut(per_k)).zip(dvd[..nk].chunks_mut(per_k)).enumerate().collect();
        let (dod, pd, qd, kd, vd) = (&dod[..nq], &pd[..np], &qd[..nq], &kd[..nk], &vd[..nk]);
        self.threads.each(items, 8 * np * s.hs, |(b, ((dqs, dks), dvs))| {
            let (qs, dos) = (&qd[b * per_q..][..per_q], &dod[b * per_q..][..per_q]);
            let (ks, vs, ps) = (&kd[b * per_k..][..per_k], &vd[b * per_k..][..per_k], &pd[b * per_p..][..per_p]);
            k::attention_backward_seq(dqs, dks, dvs, dos, ps, qs, ks, vs, s);
        });
        Ok(())
    }
    fn add_positions(&mut self, x: &FastTensor, table: &FastTensor, rows: usize, t: usize) -> Result<()> {
        host::add_positions(x.host()?, table.host()?, rows, t)
    }
    fn positions_backward(&mut self, dtable: &FastTensor, dx: &FastTensor, rows: usize, t: usize) -> Result<()> {
        host::positions_backward(dtable.host()?, dx.host()?, rows, t)
    }
    fn matmul_backward(
        &mut self,
        dx: Option<(&FastTensor, bool)>,
        dw: &FastTensor,
        db: Option<&FastTensor>,
        dy: &FastTensor,
        x: &FastTensor,
        w: &FastTensor,
        m: usize,
    ) -> Result<()> {
        let op = "matmul_backward";
        let (n, kk) = host::matmul_dims(w.host()?, dy.host()?, x.host()?, m)?;
        let (dyd, xd) = (dy.host()?.f32s(op)?, x.host()?.f32s(op)?);
        let (dyd, xd) = (&dyd[..m * n], &xd[..m * kk]);
        if let Some((dxt, acc)) = dx {
            let wt = Packed::transposed_in(k::scratch(2, 0), &w.host()?.f32s(op)?, n, kk)?;
            let mut d = dxt.host()?.f32s_mut(op)?;
            need(op, d.len(), m * kk, "dx")?;
            if m > 0 && kk > 0 {
                if acc {
                    // written in full by the product
                    let mut tmp = k::scratch_any(3, m * kk);
                    matmul::matmul_on(&self.threads, &mut tmp, dyd, &wt, None, m)?;
                    for (o, t) in d[..m * kk].iter_mut().zip(&tmp) {
                        *o += t;
                    }
                    k::give_back(3, tmp);
                } else {
                    matmul::matmul_on(&self.threads, &mut d[..m * kk], dyd, &wt, None, m)?;
                }
            }
            k::give_back(2, wt.data);
        }
        let mut dwd = touched(dw).host()?.f32s_mut(op)?;
        need(op, dwd.len(), n * kk, "dw")?;
        if n > 0 && kk > 0 {
            // dW's rows split in blocks over the threads (each value the same bits in any block)
            let tasks = self.threads.count().min(n.div_ceil(12)).max(1);
            let blk = n.div_ceil(tasks);
            let items: Vec<_> = dwd[..n * kk].chunks_mut(blk * kk).enumerate().collect();
            self.threads.each(items, 2 * m * n * kk, |(t, part)| k::matmul_dw(part, dyd, xd, m, n, kk, t * blk));
        }
        if let Some(db) = db {
            let mut bd = db.host()?.f32s_mut(op)?;
            need(op, bd.len(), n, "db")?;
            if n > 0 {
                k::column_sums(&mut bd[..n], dyd, n);
            }
        }
        Ok(())
    }
    fn layernorm_backward(
        &mut self,
        dx: &FastTensor,
        dg: &FastTensor,
        db: &FastTensor,
        dy: &FastTensor,
        x: &FastTensor,
        g: &FastTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let op = "layernorm_backward";
        let (dyd, xd, gd) = (dy.host()?.f32s(op)?, x.host()?.f32s(op)?, g.host()?.f32s(op)?);
        let c = gd.len();
        let (mut dxd, mut dgd, mut dbd) = (dx.host()?.f32s_mut(op)?, dg.host()?.f32s_mut(op)?, db.host()?.f32s_mut(op)?);
        need(op, dxd.len().min(dyd.len()).min(xd.len()), rows * c, "dx/dy/x")?;
        need(op, dgd.len().min(dbd.len()), c, "dg/db")?;
        let n = rows * c;
        k::layernorm_backward(&mut dxd[..n], &mut dgd[..c], &mut dbd[..c], &dyd[..n], &xd[..n], &gd, c, eps);
        Ok(())
    }
    fn rmsnorm_backward(
        &mut self,
        dx: &FastTensor,
        dw: &FastTensor,
        dy: &FastTensor,
        x: &FastTensor,
        w: &FastTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let op = "rmsnorm_backward";
        let (dyd, xd, wd) = (dy.host()?.f32s(op)?, x.host()?.f32s(op)?, w.host()?.f32s(op)?);
        let c = wd.len();
        let (mut dxd, mut dwd) = (dx.host()?.f32s_mut(op)?, dw.host()?.f32s_mut(op)?);
        need(op, dxd.len().min(dyd.len()).min(xd.len()), rows * c, "dx/dy/x")?;
        need(op, dwd.len(), c, "dw")?;
        let n = rows * c;
        k::rmsnorm_backward(&mut dxd[..n], &mut dwd[..c], &dyd[..n], &xd[..n], &wd, c, eps);
        Ok(())
    }
    fn act_backward(&mut self, dx: &FastTensor, dy: &FastTensor, h: &FastTensor, n: usize, op_: EwOp) -> Result<()> {
        let op = "act_backward";
        if !matches!(op_, EwOp::Relu | EwOp::Gelu | EwOp::GeluTanh | EwOp::Silu) {
            return Err(TfError::Shape { op, msg: format!("{op_:?} is not an activation") });
        }
        let (dyd, hd) = (dy.host()?.f32s(op)?, h.host()?.f32s(op)?);
        let mut dxd = dx.host()?.f32s_mut(op)?;
        need(op, dxd.len().min(dyd.len()).min(hd.len()), n, "dx/dy/h")?;
        k::act_backward(&mut dxd[..n], &dyd[..n], &hd[..n], op_);
        Ok(())
    }
    fn activation(&mut self, out: &FastTensor, x: &FastTensor, n: usize, op_: EwOp) -> Result<()> {
        let op = "activation";
        if !matches!(op_, EwOp::Relu | EwOp::Gelu | EwOp::GeluTanh | EwOp::Silu) {
            return Err(TfError::Shape { op, msg: format!("{op_:?} is not an activation") });
        }
        let xd = x.host()?.f32s(op)?;
        let mut od = touched(out).host()?.f32s_mut(op)?;
        need(op, od.len().min(xd.len()), n, "out/x")?;
        k::act_forward(&mut od[..n], &xd[..n], op_);
        Ok(())
    }
    fn swiglu_backward(
        &mut self,
        dgate: &FastTensor,
        dup: &FastTensor,
        dy: &FastTensor,
        gate: &FastTensor,
        up: &FastTensor,
        n: usize,
    ) -> Result<()> {
        let op = "swiglu_backward";
        let (dyd, gd, ud) = (dy.host()?.f32s(op)?, gate.host()?.f32s(op)?, up.host()?.f32s(op)?);
        let (mut dgd, mut dud) = (dgate.host()?.f32s_mut(op)?, dup.host()?.f32s_mut(op)?);
        need(op, dgd.len().min(dud.len()).min(dyd.len()).min(gd.len()).min(ud.len()), n, "all")?;
        k::swiglu_backward(&mut dgd[..n], &mut dud[..n], &dyd[..n], &gd[..n], &ud[..n]);
        Ok(())
    }
    fn rope_backward(&mut self, dx: &FastTensor, table: &FastTensor, s: &RopeShape) -> Result<()> {
        host::rope_backward(dx.host()?, table.host()?, s)
    }
    fn embedding_backward(&mut self, dtable: &FastTensor, dout: &FastTensor, ids: &FastTensor, rows: usize, scale: f32) -> Result<()> {
        let op = "embedding_backward";
        let (dd, idd) = (dout.host()?.f32s(op)?, ids.host()?.u32s(op)?);
        let c = *dtable.host()?.shape.last().unwrap_or(&0);
        let mut td = touched(dtable).host()?.f32s_mut(op)?;
        need(op, idd.len(), rows, "ids")?;
        need(op, dd.len(), rows * c, "dout")?;
        k::embedding_backward(&mut td, &dd[..rows * c], &idd[..rows], c, scale)
    }
    fn cross_entropy(
        &mut self,
        losses: &FastTensor,
        logits: &FastTensor,
        targets: &FastTensor,
        rows: usize,
        scale: f32,
        ignore: Option<u32>,
    ) -> Result<()> {
        let op = "cross_entropy";
        let td = targets.host()?.u32s(op)?;
        let v = *logits.host()?.shape.last().unwrap_or(&0);
        let (mut ld, mut xd) = (losses.host()?.f32s_mut(op)?, logits.host()?.f32s_mut(op)?);
        need(op, td.len().min(ld.len()), rows, "targets/losses")?;
        need(op, xd.len(), rows * v, "logits")?;
        k::cross_entropy(&mut ld[..rows], &mut xd[..rows * v], &td[..rows], v.max(1), scale, ignore)
    }
    fn sum_squares(&mut self, norms: &FastTensor, part: usize, g: &FastTensor, n: usize) -> Result<()> {
        let op = "sum_squares";
        let gd = g.host()?.f32s(op)?;
        let mut nd = norms.host()?.f32s_mut(op)?;
        need(op, gd.len(), n, "g")?;
        need(op, nd.len(), part + 1, "norms")?;
        nd[part] = k::sum_squares(&gd[..n]) as f32;
        Ok(())
    }
    fn adamw(
        &mut self,
        p: &FastTensor,
        g: &FastTensor,
        m: &FastTensor,
        v: &FastTensor,
        norms: &FastTensor,
        n: usize,
        a: &AdamStep,
    ) -> Result<()> {
        let op = "adamw";
        let (gd, nd) = (g.host()?.f32s(op)?, norms.host()?.f32s(op)?);
        let (mut pd, mut md, mut vd) = (touched(p).host()?.f32s_mut(op)?, m.host()?.f32s_mut(op)?, v.host()?.f32s_mut(op)?);
        need(op, pd.len().min(gd.len()).min(md.len()).min(vd.len()), n, "p/g/m/v")?;
        need(op, nd.len(), a.parts + 1, "norms")?;
        k::adamw(&mut pd[..n], &gd[..n], &mut md[..n], &mut vd[..n], &nd[..a.parts + 1], a);
        Ok(())
    }
    fn moe_combine_backward(
        &mut self,
        dy: &FastTensor,
        dgate: &FastTensor,
        dout: &FastTensor,
        ys: &FastTensor,
        gate: &FastTensor,
        x: usize,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        host::moe_combine_backward(dy.host()?, dgate.host()?, dout.host()?, ys.host()?, gate.host()?, x, (t, e, c, ys_rows))
    }
    fn moe_router_backward(
        &mut self,
        dlogits: &FastTensor,
        dgate: &FastTensor,
        probs: &FastTensor,
        experts: &FastTensor,
        weights: &FastTensor,
        kept: &FastTensor,
        t: usize,
        e: usize,
        k: usize,
        aux: f32,
    ) -> Result<()> {
        let routing = (probs.host()?, experts.host()?, weights.host()?, kept.host()?);
        host::moe_router_backward(dlogits.host()?, dgate.host()?, routing, (t, e, k), aux)
    }
    fn moe_aux_loss(
        &mut self,
        out: &FastTensor,
        slot: usize,
        probs: &FastTensor,
        experts: &FastTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        host::moe_aux_loss(out.host()?, slot, probs.host()?, experts.host()?, t, e, k)
    }
    fn guard_finite(&mut self, norms: &FastTensor, parts: usize, step: u32) -> Result<()> {
        host::guard_finite(norms.host()?, parts, step)
    }
    fn fill_zero(&mut self, x: &FastTensor, n: usize) -> Result<()> {
        host::fill_zero(touched(x).host()?, n)
    }
    fn copy(&mut self, dst: &FastTensor, src: &FastTensor, n: usize) -> Result<()> {
        host::copy(touched(dst).host()?, src.host()?, n)
    }
}
