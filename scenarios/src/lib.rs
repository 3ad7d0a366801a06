//! drlab's harness: simulated worlds ([`world`]), SIP traces ([`trace`]),
//! the Gherkin step definitions ([`steps`]) and the certification runner
//! ([`certify`]) behind the `drlab` command.

pub mod attacker;
pub mod bench;
pub mod bypass;
pub mod carrier;
pub mod certify;
pub mod conformance;
pub mod failover;
pub mod hold;
pub mod identity;
pub mod impairment;
pub mod pcap;
pub mod report;
pub mod sbc_rules;
pub mod security;
pub mod soak;
pub mod steps;
pub mod tester;
pub mod trace;
pub mod transfer;
pub mod world;
