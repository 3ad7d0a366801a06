@tls @health
Feature: TLS as the hub does it
  Direct Routing accepts TLS 1.2 with ECDHE-RSA suites and an SBC
  certificate from a trusted CA, sent with its intermediates, valid, with
  an EKU that includes Server Authentication and the SBC's FQDN in its CN
  or a SAN. Anything else: the connection is closed and no SIP answered.
  Every certificate variant is also checked in both directions, and
  against openssl, by tests/tls_mutual.rs and tests/openssl_tls.rs.

  Scenario: An SBC certificate with only the Server Authentication EKU is accepted
    Given the SBC is registered in the tenant as sbc.example.com with the server-auth-only certificate
    Then the hub marks the SBC active

  Scenario: An SBC certificate with the FQDN in its CN only is accepted
    Given the SBC is registered in the tenant as sbc.example.com with the cn-only certificate
    Then the hub marks the SBC active

  Scenario: An SBC certificate expiring within 30 days is accepted with a TLS warning
    Given the SBC is registered in the tenant as sbc.example.com with the expiring-in-10-days certificate
    Then the hub marks the SBC active
    And the hub shows a TLS warning for the SBC's certificate

  Scenario: An expired SBC certificate is refused and nothing is answered
    Given the SBC is registered in the tenant as sbc.example.com with the expired certificate
    When the SBC starts
    Then the hub refuses the SBC's TLS connections: certificate expired
    And the hub shows the SBC as "Warning, no SIP options" for 1 minute

  Scenario: An SBC certificate without Server Authentication in its EKU is refused
    Given the SBC is registered in the tenant as sbc.example.com with the client-auth-only certificate
    When the SBC starts
    Then the hub refuses the SBC's TLS connections: certificate EKU does not include Server Authentication

  Scenario: An SBC certificate sent without its intermediate is refused
    Given the SBC is registered in the tenant as sbc.example.com with the no-intermediate certificate
    When the SBC starts
    Then the hub refuses the SBC's TLS connections: certificate sent without its intermediate chain

  Scenario: An SBC certificate from an untrusted root is refused
    Given the SBC is registered in the tenant as sbc.example.com with the untrusted-root certificate
    When the SBC starts
    Then the hub refuses the SBC's TLS connections: certificate does not chain to a trusted root
