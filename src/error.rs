//! One error type for the core. Every message is one line, written for the person who caused it
//! (a user who dropped a file, typed a prompt, or a developer who called an op with wrong shapes).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum TfError {
    /// An op was called with inputs of the wrong shape: names the op and the shapes.
    Shape { op: &'static str, msg: String },
    /// A buffer or dispatch would exceed what the GPU allows.
    Limit(String),
    /// No WebGPU / no adapter / the device could not be created.
    NoGpu(String),
    /// The GPU reported an error (validation, out of memory) or the device was lost.
    Gpu(String),
    /// Bad input from the user: token ids, prompt, lengths, flags.
    Input(String),
    /// A checkpoint could not be loaded.
    Checkpoint(String),
    /// A model or buffer over the memory budget, or an allocation that failed.
    Memory(String),
    /// The model produced NaN or Inf values (its weights overflow f32 on this input).
    Numeric(String),
    /// A broken invariant of the core (a buffer the config promised is missing): a bug, not bad input.
    Internal(String),
}

impl fmt::Display for TfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TfError::Shape { op, msg } => write!(f, "{op}: {msg}"),
            TfError::Limit(m) => write!(f, "GPU limit: {m}"),
            TfError::NoGpu(m) => write!(f, "no GPU: {m}"),
            TfError::Gpu(m) => write!(f, "GPU error: {m}"),
            TfError::Input(m) => write!(f, "{m}"),
            TfError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            TfError::Memory(m) | TfError::Numeric(m) => write!(f, "{m}"),
            TfError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for TfError {}

pub type Result<T, E = TfError> = std::result::Result<T, E>;

/// Shape guard used at the entry of every op: `ensure(cond, "matmul", || format!(...))`.
pub fn ensure(cond: bool, op: &'static str, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(TfError::Shape { op, msg: msg() })
    }
}

/// Longest user-controlled text (a name, a shape, a JSON snippet) quoted in an error message, in bytes.
pub const MAX_QUOTED: usize = 200;
/// Longest error line the CLI prints or the page shows, in bytes.
pub const MAX_MESSAGE: usize = 1000;

/// Characters that would act on a terminal or reorder text rather than print: control characters
/// (ESC sequences, NUL, DEL, C1) and the bidirectional overrides.
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// A user-controlled string made safe for a one-line message: quoted, `"` and `\` escaped, control
/// and bidi characters escaped, at most [`MAX_QUOTED`] characters of it shown (then "...").
/// The one helper every error path uses to quote a name, a path, a dtype or a JSON snippet.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if out.len() >= MAX_QUOTED {
            out.push_str("...");
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_unsafe_char(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A shape (or any list of numbers) for a message: at most 8 dimensions shown, then the count.
pub fn shape_str<T: fmt::Display>(shape: &[T]) -> String {
    let parts: Vec<String> = shape.iter().take(8).map(|d| d.to_string()).collect();
    if shape.len() > 8 {
        format!("[{}, ... ({} dimensions)]", parts.join(", "), shape.len())
    } else {
        format!("[{}]", parts.join(", "))
    }
}

/// A JSON value for a message: compact, quoted-safe, at most [`MAX_QUOTED`] characters.
pub fn json_snippet(v: &serde_json::Value) -> String {
    // Render at most a bounded prefix: a 100 MB value is never turned into a string whole.
    struct Capped(String);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() > 4 * MAX_QUOTED {
                return Err(std::io::Error::other("enough"));
            }
            self.0.push_str(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Capped(String::new());
    let _ = serde_json::to_writer(&mut w, v);
    // serde_json already escapes control characters inside strings; bidi ones it leaves.
    escape_unsafe(&w.0, MAX_QUOTED, "...")
}

fn escape_unsafe(s: &str, max_bytes: usize, cut: &str) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes + 16));
    for c in s.chars() {
        if out.len() >= max_bytes {
            out.push_str(cut);
            break;
        }
        if is_unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The last line of defence before a message reaches a terminal or the page: one line, control and
/// bidi characters escaped (backslashes are left alone, so already-escaped text is not doubled),
/// at most [`MAX_MESSAGE`] characters.
pub fn one_line(s: &str) -> String {
    escape_unsafe(s, MAX_MESSAGE, "... (message cut)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_escaped_and_bounded() {
        assert_eq!(quote("a\"b\\c\n\x1b[31m"), r#""a\"b\\c\n\u{1b}[31m""#);
        assert_eq!(quote("\u{202e}evil"), r#""\u{202e}evil""#);
        let long = "x".repeat(5000);
        assert_eq!(quote(&long).len(), MAX_QUOTED + 4);
        assert!(quote(&"\x1b".repeat(5000)).len() < MAX_QUOTED + 16);
        assert_eq!(shape_str(&[1, 2, 3]), "[1, 2, 3]");
        assert_eq!(shape_str(&[7u64; 1000]), "[7, 7, 7, 7, 7, 7, 7, 7, ... (1000 dimensions)]");
        let big = serde_json::Value::String("y".repeat(10_000_000));
        assert!(json_snippet(&big).len() < 2 * MAX_QUOTED);
        assert_eq!(json_snippet(&serde_json::json!({"a": [1, "\u{7}\u{202e}"]})), r#"{"a":[1,"\u0007\u{202e}"]}"#);
        let m = one_line(&format!("bad {}\r\n\x1b]0;title\x07 {}", "\\n", "z".repeat(3000)));
        assert!(m.starts_with(r"bad \n\r\n\u{1b}]0;title\u{7} zzz"), "{m}");
        assert!(m.ends_with("... (message cut)") && m.len() < MAX_MESSAGE + 20);
    }
}
