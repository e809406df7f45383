//! The shared crates against moto through the real AWS SDK (one test binary): the repository on
//! both of its tables ([`store`]: DynamoDB and in memory; [`payment_books`]: a partner's payments
//! by time paid), items through the SDK and back ([`store_roundtrip`]), and the PG credentials
//! from Secrets Manager ([`secrets_manager`]).

mod payment_books;
mod secrets_manager;
mod store;
mod store_roundtrip;
mod vault;
