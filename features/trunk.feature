@carrier @trunk
Feature: The carrier trunk: static-IP peering with an ACL, or registration with digest
  A static-IP trunk is trusted by address: the SBC takes calls only from
  its carrier's gateways and refuses every other source with 403, routing
  nothing. A registration trunk trusts credentials: the SBC REGISTERs
  with digest (RFC 3261 §10, §22; RFC 7616 and RFC 8760: MD5 and SHA-256
  with qop=auth), answers the carrier's 401 and 407 challenges, answers a
  stale nonce anew, refreshes its binding before it expires, and the
  carrier sends calls to where the SBC registered.

  Scenario: A source that is not a carrier gateway is refused with 403 and nothing is routed
    Given the SBC takes calls only from the carrier's own address
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When a carrier sends the SBC an INVITE for 089000001
    Then the SBC answers it with 403
    And the SBC sent no INVITE to the hub

  Scenario: The SBC registers with SHA-256 digest and carries calls both ways
    Given the carrier requires registration with SHA-256 digest
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    Then the SBC registers with the carrier using SHA-256 after a 401
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    When Teams user Alice dials +4930123456
    Then the carrier challenges the SBC's INVITE with 407 and the SBC answers with credentials
    And the phone answers
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  Scenario: The SBC registers with MD5 digest
    Given the carrier requires registration with MD5 digest
    And the SBC is registered in the tenant as sbc.example.com
    Then the SBC registers with the carrier using MD5 after a 401

  Scenario: Offered SHA-256 and MD5, the SBC answers the first it can (RFC 8760)
    Given the carrier requires registration with SHA-256 or MD5 digest
    And the SBC is registered in the tenant as sbc.example.com
    Then the SBC registers with the carrier using SHA-256 after a 401

  Scenario: A wrong password is refused with 403, logged, and not retried in a loop
    Given the carrier requires registration with SHA-256 digest
    And the SBC is configured with the wrong carrier password
    And the SBC is registered in the tenant as sbc.example.com
    Then the carrier refuses the SBC's registration with 403 and the SBC logs why

  Scenario: The SBC refreshes its binding before it expires, answering a stale nonce anew
    Given the carrier requires registration with MD5 digest
    And the carrier grants registrations for 120 s and its nonces last 30 s
    And the SBC is registered in the tenant as sbc.example.com
    Then the SBC registers with the carrier using MD5 after a 401
    And the SBC registers again within 70 s, its stale nonce answered anew

  Scenario: A gateway that fails its OPTIONS is marked down and calls go to the other one
    Given the carrier has a second gateway, which the SBC tries first
    And the SBC is registered in the tenant as sbc.example.com
    And the carrier gateway carrier2.example.net is down
    And the hub marks the SBC active
    Then the SBC marks the carrier gateway carrier2.example.net down within 40 s
    When Teams user Alice dials +4930123456
    Then the phone answers
    And the SBC sent 0 INVITEs to carrier2.example.net
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: A gateway that answers 503 is failed over to the next one
    Given the carrier has a second gateway, which the SBC tries first
    And the SBC is registered in the tenant as sbc.example.com
    And the carrier gateway carrier2.example.net answers calls to +4930123456 with 503
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone answers
    And the SBC sent 1 INVITE to carrier2.example.net
    And the SBC sent 1 INVITE to carrier.example.net
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot
