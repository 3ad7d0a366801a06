//! drlab's harness: simulated worlds ([`world`]), SIP traces ([`trace`]),
//! the Gherkin step definitions ([`steps`]) and the certification runner
//! ([`certify`]) behind the `drlab` command.

pub mod certify;
pub mod steps;
pub mod trace;
pub mod world;
