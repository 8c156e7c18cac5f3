//! Analysis: looking inside a model (`inspect`: the hooks the forward calls at each block, the
//! ablations they apply, and the inspection reports built from what they capture).

pub mod inspect;
