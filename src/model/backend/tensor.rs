//! `CpuTensor`: the tensor of both CPU backends (the reference `CpuBackend` and the fast
//! `fastcpu::FastCpuBackend`, whose tensor wraps this one): a shape and host memory holding f32
//! values or u32 ids, with the guards every CPU op shares (aliasing, element type, bounds).

use std::cell::{Ref, RefCell, RefMut};

use crate::error::{Result, TfError};

/// The values of a CPU tensor: f32 (activations, weights) or u32 (token ids, expert indices, the
/// sampler's record), as the GPU tensors are typed.
pub enum CpuData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// A CPU tensor. Ops write through `&self`, so the data sits in a RefCell; an op that would alias
/// an output with an input returns an error, as does an op given the wrong element type.
pub struct CpuTensor {
    pub shape: Vec<usize>,
    data: RefCell<CpuData>,
}

/// An error unless `have >= want`: the guard of every CPU op, naming the op and the buffer.
pub fn need(op: &'static str, have: usize, want: usize, what: &str) -> Result<()> {
    if have < want {
        return Err(TfError::Shape { op, msg: format!("{what} holds {have} values, needs {want}") });
    }
    Ok(())
}

/// An empty vector with room for `n` values, reserved fallibly: a failed allocation is an error
/// naming the buffer, not an abort.
fn try_alloc<V>(n: usize, label: &str) -> Result<Vec<V>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        TfError::Memory(format!("out of memory: {} needs {} bytes and the allocation failed", crate::error::quote(label), n as u128 * 4))
    })?;
    Ok(v)
}

fn try_zeros<V: Clone + Default>(n: usize, label: &str) -> Result<Vec<V>> {
    let mut v = try_alloc(n, label)?;
    v.resize(n, V::default());
    Ok(v)
}

fn numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| TfError::Limit(format!("shape {shape:?} overflows")))
}

fn wrong_type(op: &'static str, want: &str) -> TfError {
    TfError::Shape { op, msg: format!("expects a tensor of {want} values") }
}

impl CpuTensor {
    /// A tensor of `shape` holding `data` (its length must be the product of `shape`).
    pub fn from_f32(shape: &[usize], data: &[f32], label: &str) -> Result<CpuTensor> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(TfError::Shape { op: "upload", msg: format!("{label}: shape {shape:?} holds {n} values, got {}", data.len()) });
        }
        let mut v = try_alloc(n, label)?;
        v.extend_from_slice(data);
        Ok(CpuTensor { shape: shape.to_vec(), data: RefCell::new(CpuData::F32(v)) })
    }
    /// An f32 tensor of `shape` that holds no values yet (a weight the fast CPU backend keeps only as
    /// its packed panels, `FastTensor`): every op's bounds guard refuses it until [`CpuTensor::set_f32`].
    pub fn unfilled(shape: &[usize]) -> CpuTensor {
        CpuTensor { shape: shape.to_vec(), data: RefCell::new(CpuData::F32(Vec::new())) }
    }
    /// Replaces the values with `v` (f32); its length must be the shape's.
    pub fn set_f32(&self, v: Vec<f32>) -> Result<()> {
        let n = numel(&self.shape)?;
        if v.len() != n {
            return Err(TfError::Shape { op: "upload", msg: format!("shape {:?} holds {n} values, got {}", self.shape, v.len()) });
        }
        *self.borrow_mut("upload")? = CpuData::F32(v);
        Ok(())
    }
    /// An f32 tensor of zeros.
    pub fn zeros(shape: &[usize], label: &str) -> Result<CpuTensor> {
        Ok(CpuTensor { shape: shape.to_vec(), data: RefCell::new(CpuData::F32(try_zeros(numel(shape)?, label)?)) })
    }
    /// A u32 tensor of zeros.
    pub fn zeros_u32(shape: &[usize], label: &str) -> Result<CpuTensor> {
        Ok(CpuTensor { shape: shape.to_vec(), data: RefCell::new(CpuData::U32(try_zeros(numel(shape)?, label)?)) })
    }
    /// Number of values.
    pub fn len(&self) -> usize {
        match &*self.data.borrow() {
            CpuData::F32(v) => v.len(),
            CpuData::U32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn borrow(&self, op: &'static str) -> Result<Ref<'_, CpuData>> {
        self.data.try_borrow().map_err(|_| TfError::Shape { op, msg: "an input aliases the output".into() })
    }
    fn borrow_mut(&self, op: &'static str) -> Result<RefMut<'_, CpuData>> {
        self.data.try_borrow_mut().map_err(|_| TfError::Shape { op, msg: "the output aliases an input".into() })
    }
    /// The f32 values, as an input of `op`.
    pub fn f32s(&self, op: &'static str) -> Result<Ref<'_, [f32]>> {
        Ref::filter_map(self.borrow(op)?, |d| match d {
            CpuData::F32(v) => Some(&v[..]),
            CpuData::U32(_) => None,
        })
        .map_err(|_| wrong_type(op, "f32"))
    }
    /// The f32 values, as the output of `op`.
    pub fn f32s_mut(&self, op: &'static str) -> Result<RefMut<'_, [f32]>> {
        RefMut::filter_map(self.borrow_mut(op)?, |d| match d {
            CpuData::F32(v) => Some(&mut v[..]),
            CpuData::U32(_) => None,
        })
        .map_err(|_| wrong_type(op, "f32"))
    }
    /// The u32 values, as an input of `op`.
    pub fn u32s(&self, op: &'static str) -> Result<Ref<'_, [u32]>> {
        Ref::filter_map(self.borrow(op)?, |d| match d {
            CpuData::U32(v) => Some(&v[..]),
            CpuData::F32(_) => None,
        })
        .map_err(|_| wrong_type(op, "u32"))
    }
    /// The u32 values, as the output of `op`.
    pub fn u32s_mut(&self, op: &'static str) -> Result<RefMut<'_, [u32]>> {
        RefMut::filter_map(self.borrow_mut(op)?, |d| match d {
            CpuData::U32(v) => Some(&mut v[..]),
            CpuData::F32(_) => None,
        })
        .map_err(|_| wrong_type(op, "u32"))
    }
    /// self[offset..offset + data.len()] = data.
    pub fn write_f32(&self, offset: usize, data: &[f32]) -> Result<()> {
        let mut d = self.f32s_mut("write")?;
        need("write", d.len(), offset + data.len(), "tensor")?;
        d[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
    /// self[offset..offset + data.len()] = data.
    pub fn write_u32(&self, offset: usize, data: &[u32]) -> Result<()> {
        let mut d = self.u32s_mut("write")?;
        need("write", d.len(), offset + data.len(), "tensor")?;
        d[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
    /// self[offset..offset + count] of an f32 tensor.
    pub fn read_f32(&self, offset: usize, count: usize) -> Result<Vec<f32>> {
        let d = self.f32s("read")?;
        need("read", d.len(), offset + count, "tensor")?;
        Ok(d[offset..offset + count].to_vec())
    }
    /// self[offset..offset + count] of a u32 tensor.
    pub fn read_u32(&self, offset: usize, count: usize) -> Result<Vec<u32>> {
        let d = self.u32s("read")?;
        need("read", d.len(), offset + count, "tensor")?;
        Ok(d[offset..offset + count].to_vec())
    }
    /// self[offset..offset + count] as raw 4-byte values, whatever the element type (`read_batch`).
    pub fn read_bits(&self, offset: usize, count: usize) -> Result<Vec<u32>> {
        let d = self.borrow("read")?;
        let v: &[u32] = match &*d {
            CpuData::F32(v) => bytemuck::cast_slice(v),
            CpuData::U32(v) => &v[..],
        };
        need("read", v.len(), offset + count, "tensor")?;
        Ok(v[offset..offset + count].to_vec())
    }
}
