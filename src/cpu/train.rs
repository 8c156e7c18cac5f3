//! The reference `Train` ops over `CpuTensor`s: the guards (each tensor holds the values the op
//! uses, outputs are not inputs) around the loops of `backward.rs`. `CpuBackend` is exactly these;
//! the fast CPU backend calls them on its tensors' host data for the ops it does not speed up.

use crate::cpu::backward as bw;
use crate::cpu::moe_backward as moe_bw;
use crate::error::Result;
use crate::model::backend::tensor::need;
use crate::model::backend::{CpuBackend, CpuTensor};
use crate::ops::{EwOp, RopeShape};
use crate::train::ops::{AdamStep, BatchAttn, Train};

/// The host forms of the training ops, over `CpuTensor`s.
pub mod host {
    use super::*;

    pub fn attention_batch(
        out: &CpuTensor,
        probs: &CpuTensor,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        keys: Option<&CpuTensor>,
        s: &BatchAttn,
    ) -> Result<()> {
        let op = "attention_batch";
        let (qd, kd, vd) = (q.f32s(op)?, k.f32s(op)?, v.f32s(op)?);
        let md = keys.map(|m| m.f32s(op)).transpose()?;
        let (mut od, mut pd) = (out.f32s_mut(op)?, probs.f32s_mut(op)?);
        bw::attention_batch(&mut od, &mut pd, &qd, &kd, &vd, md.as_deref(), s)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        dq: &CpuTensor,
        dk: &CpuTensor,
        dv: &CpuTensor,
        dout: &CpuTensor,
        probs: &CpuTensor,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        s: &BatchAttn,
    ) -> Result<()> {
        let op = "attention_backward";
        let (dod, pd, qd, kd, vd) = (dout.f32s(op)?, probs.f32s(op)?, q.f32s(op)?, k.f32s(op)?, v.f32s(op)?);
        let (mut dqd, mut dkd, mut dvd) = (dq.f32s_mut(op)?, dk.f32s_mut(op)?, dv.f32s_mut(op)?);
        bw::attention_backward(&mut dqd, &mut dkd, &mut dvd, &dod, &pd, &qd, &kd, &vd, s)
    }

    pub fn add_positions(x: &CpuTensor, table: &CpuTensor, rows: usize, t: usize) -> Result<()> {
        let op = "add_positions";
        let td = table.f32s(op)?;
        let c = *table.shape.last().unwrap_or(&0);
        let mut xd = x.f32s_mut(op)?;
        need(op, td.len(), t * c, "table")?;
        need(op, xd.len(), rows * c, "x")?;
        for (r, row) in xd[..rows * c].chunks_mut(c.max(1)).enumerate() {
            for (o, &p) in row.iter_mut().zip(&td[(r % t) * c..][..c]) {
                *o += p;
            }
        }
        Ok(())
    }

    pub fn positions_backward(dtable: &CpuTensor, dx: &CpuTensor, rows: usize, t: usize) -> Result<()> {
        let op = "positions_backward";
        let dd = dx.f32s(op)?;
        let c = *dtable.shape.last().unwrap_or(&0);
        let mut td = dtable.f32s_mut(op)?;
        need(op, td.len(), t * c, "table")?;
        need(op, dd.len(), rows * c, "dx")?;
        bw::positions_backward(&mut td[..t * c], &dd[..rows * c], c.max(1), t);
        Ok(())
    }

    /// The matmul backward's guards: returns (N, K) of W.
    pub fn matmul_dims(w: &CpuTensor, dy: &CpuTensor, x: &CpuTensor, m: usize) -> Result<(usize, usize)> {
        let op = "matmul_backward";
        let (n, k) = match w.shape[..] {
            [n, k] => (n, k),
            _ => return Err(crate::error::TfError::Shape { op, msg: format!("W must be (N, K), got {:?}", w.shape) }),
        };
        need(op, dy.len(), m * n, "dy")?;
        need(op, x.len(), m * k, "x")?;
        Ok((n, k))
    }

    pub fn matmul_backward(
        dx: Option<(&CpuTensor, bool)>,
        dw: &CpuTensor,
        db: Option<&CpuTensor>,
        dy: &CpuTensor,
        x: &CpuTensor,
        w: &CpuTensor,
        m: usize,
    ) -> Result<()> {
        let op = "matmul_backward";
        let (n, k) = matmul_dims(w, dy, x, m)?;
        let (dyd, xd, wd) = (dy.f32s(op)?, x.f32s(op)?, w.f32s(op)?);
        let mut dxd = dx.map(|(t, acc)| t.f32s_mut(op).map(|d| (d, acc))).transpose()?;
        let mut dwd = dw.f32s_mut(op)?;
        let mut dbd = db.map(|t| t.f32s_mut(op)).transpose()?;
        if let Some((d, _)) = &dxd {
            need(op, d.len(), m * k, "dx")?;
        }
        need(op, dwd.len(), n * k, "dw")?;
        let dx = dxd.as_mut().map(|(d, acc)| (&mut d[..m * k], *acc));
        bw::matmul_backward(dx, &mut dwd[..n * k], dbd.as_deref_mut(), &dyd[..m * n], &xd[..m * k], &wd, m, n, k);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_backward(
        dx: &CpuTensor,
        dg: &CpuTensor,
        db: &CpuTensor,
        dy: &CpuTensor,
        x: &CpuTensor,
        g: &CpuTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let op = "layernorm_backward";
        let (dyd, xd, gd) = (dy.f32s(op)?, x.f32s(op)?, g.f32s(op)?);
        let c = gd.len();
        let (mut dxd, mut dgd, mut dbd) = (dx.f32s_mut(op)?, dg.f32s_mut(op)?, db.f32s_mut(op)?);
        need(op, dxd.len().min(dyd.len()).min(xd.len()), rows * c, "dx/dy/x")?;
        need(op, dgd.len().min(dbd.len()), c, "dg/db")?;
        bw::layernorm_backward(&mut dxd[..rows * c], &mut dgd[..c], &mut dbd[..c], &dyd[..rows * c], &xd[..rows * c], &gd, c, eps);
        Ok(())
    }

    pub fn rmsnorm_backward(
        dx: &CpuTensor,
        dw: &CpuTensor,
        dy: &CpuTensor,
        x: &CpuTensor,
        w: &CpuTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let op = "rmsnorm_backward";
        let (dyd, xd, wd) = (dy.f32s(op)?, x.f32s(op)?, w.f32s(op)?);
        let c = wd.len();
        let (mut dxd, mut dwd) = (dx.f32s_mut(op)?, dw.f32s_mut(op)?);
        need(op, dxd.len().min(dyd.len()).min(xd.len()), rows * c, "dx/dy/x")?;
        need(op, dwd.len(), c, "dw")?;
        bw::rmsnorm_backward(&mut dxd[..rows * c], &mut dwd[..c], &dyd[..rows * c], &xd[..rows * c], &wd, c, eps);
        Ok(())
    }

    pub fn act_backward(dx: &CpuTensor, dy: &CpuTensor, h: &CpuTensor, n: usize, op_: EwOp) -> Result<()> {
        let op = "act_backward";
        let (dyd, hd) = (dy.f32s(op)?, h.f32s(op)?);
        let mut dxd = dx.f32s_mut(op)?;
        need(op, dxd.len().min(dyd.len()).min(hd.len()), n, "dx/dy/h")?;
        bw::act_backward(&mut dxd[..n], &dyd[..n], &hd[..n], op_)
    }

    pub fn swiglu_backward(dgate: &CpuTensor, dup: &CpuTensor, dy: &CpuTensor, gate: &CpuTensor, up: &CpuTensor, n: usize) -> Result<()> {
        let op = "swiglu_backward";
        let (dyd, gd, ud) = (dy.f32s(op)?, gate.f32s(op)?, up.f32s(op)?);
        let (mut dgd, mut dud) = (dgate.f32s_mut(op)?, dup.f32s_mut(op)?);
        need(op, dgd.len().min(dud.len()).min(dyd.len()).min(gd.len()).min(ud.len()), n, "all")?;
        bw::swiglu_backward(&mut dgd[..n], &mut dud[..n], &dyd[..n], &gd[..n], &ud[..n])
    }

    pub fn rope_backward(dx: &CpuTensor, table: &CpuTensor, s: &RopeShape) -> Result<()> {
        let op = "rope_backward";
        let td = table.f32s(op)?;
        let mut xd = dx.f32s_mut(op)?;
        need(op, xd.len(), s.offset + s.t.saturating_sub(1) * s.row_stride + s.nh * s.hs, "x")?;
        need(op, td.len(), (s.start_pos + s.t) * s.hs, "table")?;
        bw::rope_backward(&mut xd, &td, s.t, s.nh, s.hs, s.start_pos, s.row_stride, s.offset);
        Ok(())
    }

    pub fn embedding_backward(dtable: &CpuTensor, dout: &CpuTensor, ids: &CpuTensor, rows: usize, scale: f32) -> Result<()> {
        let op = "embedding_backward";
        let (dd, idd) = (dout.f32s(op)?, ids.u32s(op)?);
        let c = *dtable.shape.last().unwrap_or(&0);
        let mut td = dtable.f32s_mut(op)?;
        need(op, idd.len(), rows, "ids")?;
        need(op, dd.len(), rows * c, "dout")?;
        bw::embedding_backward(&mut td, &dd[..rows * c], &idd[..rows], c, scale)
    }

    pub fn cross_entropy(
        losses: &CpuTensor,
        logits: &CpuTensor,
        targets: &CpuTensor,
        rows: usize,
        scale: f32,
        ignore: Option<u32>,
    ) -> Result<()> {
        let op = "cross_entropy";
        let td = targets.u32s(op)?;
        let v = *logits.shape.last().unwrap_or(&0);
        let (mut ld, mut xd) = (losses.f32s_mut(op)?, logits.f32s_mut(op)?);
        need(op, td.len().min(ld.len()), rows, "targets/losses")?;
        need(op, xd.len(), rows * v, "logits")?;
        bw::cross_entropy(&mut ld[..rows], &mut xd[..rows * v], &td[..rows], v.max(1), scale, ignore)
    }

    pub fn sum_squares(norms: &CpuTensor, part: usize, g: &CpuTensor, n: usize) -> Result<()> {
        let op = "sum_squares";
        let gd = g.f32s(op)?;
        let mut nd = norms.f32s_mut(op)?;
        need(op, gd.len(), n, "g")?;
        need(op, nd.len(), part + 1, "norms")?;
        nd[part] = gd[..n].iter().map(|&x| x as f64 * x as f64).sum::<f64>() as f32;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn adamw(p: &CpuTensor, g: &CpuTensor, m: &CpuTensor, v: &CpuTensor, norms: &CpuTensor, n: usize, a: &AdamStep) -> Result<()> {
        let op = "adamw";
        let (gd, nd) = (g.f32s(op)?, norms.f32s(op)?);
        let (mut pd, mut md, mut vd) = (p.f32s_mut(op)?, m.f32s_mut(op)?, v.f32s_mut(op)?);
        need(op, pd.len().min(gd.len()).min(md.len()).min(vd.len()), n, "p/g/m/v")?;
        need(op, nd.len(), a.parts + 1, "norms")?;
        bw::adamw(&mut pd[..n], &gd[..n], &mut md[..n], &mut vd[..n], &nd[..a.parts + 1], a);
        Ok(())
    }

    pub fn guard_finite(norms: &CpuTensor, parts: usize, step: u32) -> Result<()> {
        let mut nd = norms.f32s_mut("guard_finite")?;
        need("guard_finite", nd.len(), parts + 2, "norms")?;
        bw::guard_finite(&mut nd, parts, step);
        Ok(())
    }

    /// Expert x's part of `moe_combine`'s backward over (T, E, C, ys_rows).
    pub fn moe_combine_backward(
        dy: &CpuTensor,
        dgate: &CpuTensor,
        dout: &CpuTensor,
        ys: &CpuTensor,
        gate: &CpuTensor,
        x: usize,
        (t, e, c, ys_rows): (usize, usize, usize, usize),
    ) -> Result<()> {
        let op = "moe_combine_backward";
        let (dod, yd, gd) = (dout.f32s(op)?, ys.f32s(op)?, gate.f32s(op)?);
        let (mut dyd, mut dgd) = (dy.f32s_mut(op)?, dgate.f32s_mut(op)?);
        crate::error::ensure(x < e && t <= ys_rows, op, || format!("expert {x} of {e} over {t} tokens of {ys_rows} rows"))?;
        need(op, dyd.len().min(dod.len()), t * c, "dy/dout")?;
        need(op, dgd.len().min(gd.len()), t * e, "dgate/gate")?;
        need(op, yd.len(), e * ys_rows * c, "ys")?;
        moe_bw::moe_combine_backward(&mut dyd, &mut dgd, &dod, &yd, &gd, x, (t, e, c, ys_rows));
        Ok(())
    }

    /// The router's backward; `routing` is (probs, experts, weights, kept), over (T, E, K).
    pub fn moe_router_backward(
        dlogits: &CpuTensor,
        dgate: &CpuTensor,
        (probs, experts, weights, kept): (&CpuTensor, &CpuTensor, &CpuTensor, &CpuTensor),
        (t, e, k): (usize, usize, usize),
        aux: f32,
    ) -> Result<()> {
        let op = "moe_router_backward";
        let (dgd, pd, wd) = (dgate.f32s(op)?, probs.f32s(op)?, weights.f32s(op)?);
        let (ed, kd) = (experts.u32s(op)?, kept.u32s(op)?);
        let mut dld = dlogits.f32s_mut(op)?;
        crate::error::ensure(k >= 1 && k <= e, op, || format!("top-k {k} must be within 1..={e}"))?;
        need(op, dld.len().min(dgd.len()).min(pd.len()), t * e, "dlogits/dgate/probs")?;
        need(op, ed.len().min(kd.len()).min(wd.len()), t * k, "experts/kept/weights")?;
        let r = moe_bw::Routing { probs: &pd[..t * e], experts: &ed[..t * k], weights: &wd[..t * k], kept: &kd[..t * k], e, k };
        moe_bw::moe_router_backward(&mut dld[..t * e], &dgd[..t * e], &r, aux)
    }

    pub fn moe_aux_loss(out: &CpuTensor, slot: usize, probs: &CpuTensor, experts: &CpuTensor, t: usize, e: usize, k: usize) -> Result<()> {
        let op = "moe_aux_loss";
        let (pd, ed) = (probs.f32s(op)?, experts.u32s(op)?);
        let mut od = out.f32s_mut(op)?;
        need(op, od.len(), slot + 1, "out")?;
        need(op, pd.len(), t * e, "probs")?;
        need(op, ed.len(), t * k, "experts")?;
        od[slot] = moe_bw::moe_aux_loss(&pd, &ed, t, e, k)?;
        Ok(())
    }

    pub fn fill_zero(x: &CpuTensor, n: usize) -> Result<()> {
        let mut xd = x.f32s_mut("fill_zero")?;
        need("fill_zero", xd.len(), n, "x")?;
        xd[..n].fill(0.0);
        Ok(())
    }

    pub fn copy(dst: &CpuTensor, src: &CpuTensor, n: usize) -> Result<()> {
        let sd = src.f32s("copy")?;
        let mut dd = dst.f32s_mut("copy")?;
        need("copy", sd.len().min(dd.len()), n, "src/dst")?;
        dd[..n].copy_from_slice(&sd[..n]);
        Ok(())
    }
}

impl Train for CpuBackend {
    fn attention_batch(
        &mut self,
        out: &CpuTensor,
        probs: &CpuTensor,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        keys: Option<&CpuTensor>,
        s: &BatchAttn,
    ) -> Result<()> {
        host::attention_batch(out, probs, q, k, v, keys, s)
    }
    fn attention_backward(
        &mut self,
        dq: &CpuTensor,
        dk: &CpuTensor,
        dv: &CpuTensor,
        dout: &CpuTensor,
        probs: &CpuTensor,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        s: &BatchAttn,
    ) -> Result<()> {
        host::attention_backward(dq, dk, dv, dout, probs, q, k, v, s)
    }
    fn add_positions(&mut self, x: &CpuTensor, table: &CpuTensor, rows: usize, t: usize) -> Result<()> {
        host::add_positions(x, table, rows, t)
    }
    fn positions_backward(&mut self, dtable: &CpuTensor, dx: &CpuTensor, rows: usize, t: usize) -> Result<()> {
        host::positions_backward(dtable, dx, rows, t)
    }
    fn matmul_backward(
        &mut self,
        dx: Option<(&CpuTensor, bool)>,
        dw: &CpuTensor,
        db: Option<&CpuTensor>,
        dy: &CpuTensor,
        x: &CpuTensor,
        w: &CpuTensor,
        m: usize,
    ) -> Result<()> {
        host::matmul_backward(dx, dw, db, dy, x, w, m)
    }
    fn layernorm_backward(
        &mut self,
        dx: &CpuTensor,
        dg: &CpuTensor,
        db: &CpuTensor,
        dy: &CpuTensor,
        x: &CpuTensor,
        g: &CpuTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        host::layernorm_backward(dx, dg, db, dy, x, g, rows, eps)
    }
    fn rmsnorm_backward(
        &mut self,
        dx: &CpuTensor,
        dw: &CpuTensor,
        dy: &CpuTensor,
        x: &CpuTensor,
        w: &CpuTensor,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        host::rmsnorm_backward(dx, dw, dy, x, w, rows, eps)
    }
    fn act_backward(&mut self, dx: &CpuTensor, dy: &CpuTensor, h: &CpuTensor, n: usize, op: EwOp) -> Result<()> {
        host::act_backward(dx, dy, h, n, op)
    }
    fn swiglu_backward(
        &mut self,
        dgate: &CpuTensor,
        dup: &CpuTensor,
        dy: &CpuTensor,
        gate: &CpuTensor,
        up: &CpuTensor,
        n: usize,
    ) -> Result<()> {
        host::swiglu_backward(dgate, dup, dy, gate, up, n)
    }
    fn rope_backward(&mut self, dx: &CpuTensor, table: &CpuTensor, s: &RopeShape) -> Result<()> {
        host::rope_backward(dx, table, s)
    }
    fn embedding_backward(&mut self, dtable: &CpuTensor, dout: &CpuTensor, ids: &CpuTensor, rows: usize, scale: f32) -> Result<()> {
        host::embedding_backward(dtable, dout, ids, rows, scale)
    }
    fn cross_entropy(
        &mut self,
        losses: &CpuTensor,
        logits: &CpuTensor,
        targets: &CpuTensor,
        rows: usize,
        scale: f32,
        ignore: Option<u32>,
    ) -> Result<()> {
        host::cross_entropy(losses, logits, targets, rows, scale, ignore)
    }
    fn sum_squares(&mut self, norms: &CpuTensor, part: usize, g: &CpuTensor, n: usize) -> Result<()> {
        host::sum_squares(norms, part, g, n)
    }
    fn adamw(
        &mut self,
        p: &CpuTensor,
        g: &CpuTensor,
        m: &CpuTensor,
        v: &CpuTensor,
        norms: &CpuTensor,
        n: usize,
        a: &AdamStep,
    ) -> Result<()> {
        host::adamw(p, g, m, v, norms, n, a)
    }
    fn moe_combine_backward(
        &mut self,
        dy: &CpuTensor,
        dgate: &CpuTensor,
        dout: &CpuTensor,
        ys: &CpuTensor,
        gate: &CpuTensor,
        x: usize,
        t: usize,
        e: usize,
        c: usize,
        ys_rows: usize,
    ) -> Result<()> {
        host::moe_combine_backward(dy, dgate, dout, ys, gate, x, (t, e, c, ys_rows))
    }
    fn moe_router_backward(
        &mut self,
        dlogits: &CpuTensor,
        dgate: &CpuTensor,
        probs: &CpuTensor,
        experts: &CpuTensor,
        weights: &CpuTensor,
        kept: &CpuTensor,
        t: usize,
        e: usize,
        k: usize,
        aux: f32,
    ) -> Result<()> {
        host::moe_router_backward(dlogits, dgate, (probs, experts, weights, kept), (t, e, k), aux)
    }
    fn moe_aux_loss(
        &mut self,
        out: &CpuTensor,
        slot: usize,
        probs: &CpuTensor,
        experts: &CpuTensor,
        t: usize,
        e: usize,
        k: usize,
    ) -> Result<()> {
        host::moe_aux_loss(out, slot, probs, experts, t, e, k)
    }
    fn guard_finite(&mut self, norms: &CpuTensor, parts: usize, step: u32) -> Result<()> {
        host::guard_finite(norms, parts, step)
    }
    fn fill_zero(&mut self, x: &CpuTensor, n: usize) -> Result<()> {
        host::fill_zero(x, n)
    }
    fn copy(&mut self, dst: &CpuTensor, src: &CpuTensor, n: usize) -> Result<()> {
        host::copy(dst, src, n)
    }
}
