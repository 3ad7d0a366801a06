@long-ringing @call
Feature: Calls that ring for longer than the transaction timer
  RFC 3261 §17.1.1.2 stops Timer B once a provisional arrives: a callee
  may ring for minutes. Neither the SBC nor the far ends may time the
  INVITE out, fail over to another hub proxy, or CANCEL anything.

  @external
  Scenario: A Teams user who answers after 45 seconds is reached without failover
    Given the SBC is registered in the tenant as sbc.example.com
    And Teams users answer 45 s after ringing
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    And the SBC sent exactly one INVITE to the hub
    And nobody sent a CANCEL
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  @external
  Scenario: A PSTN phone that answers after 45 seconds is reached
    Given the SBC is registered in the tenant as sbc.example.com
    And PSTN phones answer 45 s after ringing
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone answers
    And audio flows both ways, decrypted and in order
    And nobody sent a CANCEL
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot
