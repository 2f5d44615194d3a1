//! Black-box tests of the tracker: the real `Application` on port 0 (or its binary, for
//! crashes), a fresh PostgreSQL database and fresh topics on the local broker per test. A
//! missing service fails the tests.

mod health;
mod helpers;
mod refused;
mod relay;
mod restart;
mod topics;
mod track;
