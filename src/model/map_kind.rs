//! Names for where attention happens: `Stack` (the encoder's or the decoder's layers, each
//! found by its index in the stack) and `MapKind` (which attention an attention map holds,
//! spelled "encoder" | "decoder" | "cross" wherever it is written out as JSON).

use serde::Serialize;

/// A stack of layers. A layer is named by its stack and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// the encoder-decoder's encoder
    Encoder,
    /// the decoder: every layer of a decoder-only or llama model, the encoder-decoder's decoder
    Decoder,
}

impl Stack {
    /// The maps the self-attention of this stack's layers writes.
    pub fn self_attention(self) -> MapKind {
        match self {
            Stack::Encoder => MapKind::Encoder,
            Stack::Decoder => MapKind::Decoder,
        }
    }
}

/// Which attention a map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapKind {
    /// the encoder's self-attention
    Encoder,
    /// the decoder's self-attention
    Decoder,
    /// the encoder-decoder's decoder attending to the source
    Cross,
}

impl MapKind {
    /// The JSON spelling (the same as its serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            MapKind::Encoder => "encoder",
            MapKind::Decoder => "decoder",
            MapKind::Cross => "cross",
        }
    }
}

impl std::fmt::Display for MapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_spelling_is_as_str() {
        for k in [MapKind::Encoder, MapKind::Decoder, MapKind::Cross] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::from(k.as_str()));
        }
    }
}
