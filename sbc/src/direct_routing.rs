//! What every party knows of the Direct Routing interface (behaviour §1,
//! §2): the hub's public proxies, in the order an SBC tries them.

/// The hub's proxies, in the order an SBC tries them (Direct Routing plan).
pub const HUB_FQDNS: [&str; 3] = [
    "sip.pstnhub.microsoft.com",
    "sip2.pstnhub.microsoft.com",
    "sip3.pstnhub.microsoft.com",
];

/// The hub's TLS port (behaviour §1: SBC → hub goes to 5061).
pub const HUB_PORT: u16 = 5061;

/// An SBC's OPTIONS to one hub proxy (behaviour §2): the SBC starts the
/// exchange, its Contact carries the FQDN the certificate names, never an
/// IP, with `transport=tls`; and the hop to send it on.
pub fn sbc_options(
    sbc_fqdn: &str,
    sbc_port: u16,
    hub: &str,
    hub_port: u16,
    cseq: u32,
) -> crate::sip::session::RequestBuilder {
    let hub_uri = format!("sip:{hub}:{hub_port}");
    crate::sip::session::RequestBuilder::new(
        crate::sip::wire::Method::Options,
        hub_uri.clone(),
        format!("<sip:{sbc_fqdn}:{sbc_port}>"),
        format!("<{hub_uri}>"),
    )
    .cseq(cseq)
    .contact(format!("<sip:{sbc_fqdn}:{sbc_port};transport=tls>"))
}

/// The hop for a request to a hub proxy: TLS to its FQDN.
pub fn hub_hop(hub: &str, hub_port: u16) -> crate::sip::session::Hop {
    crate::sip::session::Hop::Uri(format!("sip:{hub}:{hub_port};transport=tls"))
}
