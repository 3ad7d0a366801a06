@q850 @hub @conformance
Feature: How the hub says why: Reason, Q.850 and Microsoft's codes
  Every refusal and every BYE of the hub says why the way Direct Routing
  does: Reason: Q.850;cause=N;text="<correlation-id>;<phrase>", with
  Microsoft's response code in ms-diagnostics where the docs give one. SIP
  statuses map to Q.850 per NICC ND1017 (486 gives 34, not RFC 4497's 17);
  docs/hub-refusals.md says which values are sourced and which are guesses.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  @external
  Scenario: A call to a number no Teams user has: 404, cause 1, 511404
    When PSTN caller +4930123456 calls +4989099999
    Then the hub refuses the INVITE with 404
    And the hub's last refusal carries Q.850 cause 1 and Microsoft code 511404
    And the PSTN caller hears 404

  @external
  Scenario: A busy Teams user: 486 with ND1017's cause 34
    Given Teams user Bob is busy
    When PSTN caller +4930123456 calls +4989000002
    Then the hub refuses the INVITE with 486
    And the hub's last refusal carries Q.850 cause 34
    And the PSTN caller hears 486

  @external
  Scenario: A caller on the Teams user's blocked list: 403 and 510534
    When PSTN caller +4930654321 calls +4989000001
    Then the hub refuses the INVITE with 403
    And the hub's last refusal carries Q.850 cause 21 and Microsoft code 510534
    And the PSTN caller hears 403

  @external
  Scenario: A disabled user who still has the number: 403 with cause 63, not 404
    When PSTN caller +4930123456 calls +4989000003
    Then the hub refuses the INVITE with 403
    And the hub's last refusal carries Q.850 cause 63
    And the PSTN caller hears 403

  @external
  Scenario: An INVITE offering plain RTP: 488 and 531000
    When a client with the SBC's certificate sends an INVITE for +4989000001 offering RTP/AVP
    Then the hub answers it with 488
    And the hub's last refusal carries Q.850 cause 127 and Microsoft code 531000

  @external
  Scenario: A Teams user who hangs up clears the call normally: cause 16
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the hub's last BYE carries Q.850 cause 16

  Scenario: An SBC that answers the hub's SRTP offer with plain RTP: the call ends, no media is sent
    Given the SBC is misconfigured to answer the hub with plain RTP
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the hub ends the call without sending it any media
    And the hub's last BYE carries Q.850 cause 127 and Microsoft code 531000
