@outbound @call
Feature: Outbound calls, Teams to PSTN
  A Teams user dials a PSTN number. The hub sends the INVITE to the SBC
  over TLS with an SRTP offer; the SBC routes it to the carrier in the
  national format and relays the media.

  @external @external-smoke
  Scenario: A Teams user calls a PSTN number
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the hub's INVITE to sbc.example.com is longer than 1500 bytes
    And the phone rings
    And the phone answers
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And every message from the hub has upper-case header names
    And the trace matches its snapshot
