@carrier @call
Feature: PSTN phones behind the carrier trunk
  A called PSTN phone answers, or the PSTN fails the call the way it does:
  busy, no answer, congestion, a declined call, a number that does not
  exist, with early media (ringback or an announcement) first or not. The
  carrier's gateway writes each failure's Q.850 cause in a Reason header
  (RFC 3398 §7.2.4.1, RFC 3326); the SBC passes the status and the cause
  on to the hub, which shows the Teams user what the PSTN said.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  @external
  Scenario: A busy PSTN phone: 486 with cause 17 reaches the Teams user
    Given PSTN phone +4930123456 is busy
    When Teams user Alice dials +4930123456
    Then the SBC answers the hub's INVITE with 486 and Reason "Q.850;cause=17;text="User busy""
    And the Teams user's call fails with "486 Busy Here from SBC (560486); Reason: Q.850;cause=17"
    And the trace matches its snapshot

  @external
  Scenario: A PSTN phone that rings unanswered: 480 with cause 19 after its ring timeout
    Given PSTN phone +4930123456 rings for 20 s without answering
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the SBC answers the hub's INVITE with 480 and Reason "Q.850;cause=19;text="No answer from user (user alerted)""
    And the Teams user's call fails with "480 Temporarily Unavailable from SBC (560480)"
    And nobody sent a CANCEL

  @external
  Scenario: PSTN congestion: 503 with cause 34
    Given PSTN phone +4930123456 is congested
    When Teams user Alice dials +4930123456
    Then the SBC answers the hub's INVITE with 503 and Reason "Q.850;cause=34;text="No circuit/channel available""
    And the Teams user's call fails with "503 Service Unavailable from the SBC (560503)"

  @external
  Scenario: A PSTN user who declines: 603 with cause 21
    Given PSTN phone +4930123456 declines calls
    When Teams user Alice dials +4930123456
    Then the SBC answers the hub's INVITE with 603 and Reason "Q.850;cause=21;text="Call rejected""
    And the Teams user's call fails with "603 Decline from SBC (560603)"

  @external
  Scenario: An unallocated number plays its announcement as early media, then 404 with cause 1
    Given PSTN phone +4930123456 is an unallocated number
    And PSTN phone +4930123456 sends early media first
    When Teams user Alice dials +4930123456
    Then the Teams user hears the phone's early media before any answer
    And the SBC answers the hub's INVITE with 404 and Reason "Q.850;cause=1;text="Unallocated (unassigned) number""
    And the Teams user's call fails with "404 Not Found from SBC (560404)"
    And the trace matches its snapshot

  @external
  Scenario: A PSTN phone with early media before it answers
    Given PSTN phone +4930123456 sends early media first
    When Teams user Alice dials +4930123456
    Then the Teams user hears the phone's early media before any answer
    And the phone answers
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: A called PSTN phone hangs up 5 s after it answers
    Given PSTN phone +4930123456 hangs up 5 s after the answer
    When Teams user Alice dials +4930123456
    Then the phone answers
    And the phone hangs up about 5 s after answering
    And both legs end with BYE and 200

  @external
  Scenario: A PSTN caller hangs up 5 s after the Teams user answers
    Given PSTN phone +4930123456 hangs up 5 s after the answer
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the phone hangs up about 5 s after answering
    And both legs end with BYE and 200

  @external
  Scenario: Voice quality at both ends of a clean call: the E-model's G.711 score, less its delay
    When Teams user Alice dials +4930123456
    Then the phone answers
    And the PSTN phone hears the other side with MOS above 4.3
    And the Teams side hears the other side with MOS above 4.3
    And the PSTN phone hears the other side with MOS below 4.42
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: Call records give the figures carriers count: ASR, NER, PDD
    Given PSTN phone +4930123456 is busy
    When Teams user Alice dials +4930123456
    Then the Teams user's call fails with "486 Busy Here"
    And the carrier's last call record has final code 486, cause 17, ended by the callee
    Given PSTN phone +4930123456 is congested
    When Teams user Alice dials +4930123456
    Then the Teams user's call fails with "503 Service Unavailable"
    And the carrier's last call record has final code 503, cause 34, ended by the network
    Given PSTN phone +4930123456 answers
    When Teams user Alice dials +4930123456
    Then the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the carrier's last call record has final code 200, ended by the caller, and a PDD of about 500 ms
    And the carrier's call records give ASR 33 % and NER 67 %
    And the SBC's call records give ASR 33 % and NER 67 %

  @external
  Scenario: A PSTN caller who hangs up while the Teams user rings cancels both legs
    Given Teams users answer 30 s after ringing
    When PSTN caller +4930123456 calls +4989000001
    And 3 seconds pass
    And the PSTN caller hangs up
    Then the PSTN caller's CANCEL ends both legs with 487
