//! The Hugging Face planner (formats::plan) on a fuzzed directory: config.json, an optional
//! model.safetensors.index.json and safetensors headers, held in memory. A plan that succeeds is
//! turned into our config and its tensor list is checked against the files it names.
//!
//! Input: parts separated by 0xFF (never inside UTF-8 text). Part 0 is config.json; part 1 the
//! index (absent when empty); each further part is one file: its name up to the first '\n', then a
//! u32 (little-endian) count of zero bytes that follow the header, then the header's JSON. The file
//! is the 8-byte header length, the header and those zeros (virtual: never held in memory).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use tinyformer::formats::{self, Files, FormatError};

/// Files whose tails are zeros that are not stored.
struct Sparse(HashMap<String, (Vec<u8>, u64)>);

impl Files for Sparse {
    fn size(&self, name: &str) -> Option<u64> {
        self.0.get(name).map(|(b, zeros)| b.len() as u64 + zeros)
    }
    fn read_range(&self, name: &str, start: u64, len: u64) -> Result<Vec<u8>, FormatError> {
        let (b, zeros) = self.0.get(name).ok_or_else(|| FormatError(format!("{name}: no such file")))?;
        let end = start.checked_add(len).filter(|&e| e <= b.len() as u64 + zeros);
        let Some(end) = end else { return Err(FormatError(format!("{name}: read past the end"))) };
        // the planner reads headers only; a long read of the zero tail would be a finding
        assert!(len <= formats::MAX_JSON_BYTES + 8, "{name}: a read of {len} bytes while planning");
        let mut out: Vec<u8> = b.get(start.min(b.len() as u64) as usize..end.min(b.len() as u64) as usize).unwrap_or(&[]).to_vec();
        out.resize(len as usize, 0);
        Ok(out)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xFF);
    let mut files = HashMap::new();
    files.insert("config.json".to_string(), (parts.next().unwrap_or(&[]).to_vec(), 0));
    if let Some(index) = parts.next().filter(|p| !p.is_empty()) {
        files.insert("model.safetensors.index.json".to_string(), (index.to_vec(), 0));
    }
    for p in parts {
        let Some(nl) = p.iter().position(|&b| b == b'\n') else { continue };
        let Ok(name) = std::str::from_utf8(&p[..nl]) else { continue };
        let rest = &p[nl + 1..];
        if rest.len() < 4 {
            continue;
        }
        let zeros = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let header = &rest[4..];
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        files.insert(name.to_string(), (file, zeros));
    }
    let files = Sparse(files);
    match formats::plan(&files, None) {
        Ok(plan) => {
            let _ = formats::config_value(&plan);
            if let Ok(cfg) = formats::config_of(&plan) {
                let _ = cfg.expected_tensors();
            }
            for t in &plan.tensors {
                // every planned source lies inside its file
                let size = files.size(&t.source.file).expect("a planned tensor names a file that exists");
                let n: u64 = t.source.stored.iter().map(|&d| d as u64).product();
                assert!(t.source.offset.saturating_add(n * t.source.dtype.bytes()) <= size, "{} past the end of {}", t.name, t.source.file);
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
