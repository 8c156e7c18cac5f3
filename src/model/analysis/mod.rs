//! Analysis: looking inside a model. The hooks the forward calls at each block and the ablations
//! they apply (`hooks`), and the inspection reports built from what they capture (`inspect`).

pub mod hooks;
pub mod inspect;
