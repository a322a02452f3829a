//! audit's rules, without I/O: what a valid event is ([`event`]), how records are chained
//! ([`chain`]), how checkpoints are signed and checked ([`checkpoint`]), and what a search asks
//! for and who may see it ([`filter`]).

pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod filter;
