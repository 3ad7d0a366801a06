@inbound @call
Feature: Inbound calls, PSTN to Teams
  A PSTN phone calls a Teams user's DID over the carrier trunk. The SBC
  normalises the number to E.164, offers SRTP to the hub over TLS, and
  relays RTP to SRTP and back.

  @external @external-smoke
  Scenario: A PSTN caller reaches a Teams user
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the SBC sends the INVITE to sip.pstnhub.microsoft.com with user=phone and E.164 numbers
    And the Teams user answers
    And the hub answers the SBC's INVITE with 100, 180s from distinct forks, one 183 with SDP and a 200
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  @failover
  Scenario: The SBC fails over to the next hub proxy when the first is down
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub proxy sip.pstnhub.microsoft.com is down
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the SBC sends the INVITE to sip2.pstnhub.microsoft.com with user=phone and E.164 numbers
    And the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  @external @external-smoke
  Scenario: A call to a number no Teams user has is refused with 404
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989099999
    Then the hub refuses the INVITE with 404
    And the PSTN caller hears 404
    And the trace matches its snapshot

  @latency
  Scenario: A PSTN caller reaches a Teams user over a 150 ms link to the hub
    Given the SBC is registered in the tenant as sbc.example.com
    And the link between the SBC and the hub has 150 ms of latency
    And the link between the SBC and the media processor has 150 ms of latency
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the SBC sends the INVITE to sip.pstnhub.microsoft.com with user=phone and E.164 numbers
    And the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot
