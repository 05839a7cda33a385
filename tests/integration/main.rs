//! Ferry's integration tests, from the user's side: the library, the real `ferry` binary,
//! crash safety with a real process, and the dependency rules.

mod cli;
mod crash;
mod support;
mod tidy;
