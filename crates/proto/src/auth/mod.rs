//! The computations of WAMP authentication methods that both ends perform:
//! what a client signs and what a router checks come from one function, so
//! the two cannot disagree. Who is allowed in, decoys for unknown authids,
//! throttling and credential storage are the router's (`switchyard-router`
//! `auth`); holding credentials is the client's.

pub mod cryptosign;
pub mod wampcra;
