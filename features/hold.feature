@hold @call
Feature: Hold, resume and refresh across the SBC
  Either side may put a call on hold with a re-INVITE. PSTN gear says so
  with a=sendonly, a=recvonly or c=0.0.0.0; Direct Routing understands only
  a=inactive (and refuses c=0.0.0.0 with 488), so the SBC answers the
  holder and tells the other side with a=inactive, and relays nothing until
  the call is resumed. A re-INVITE that changes nothing is answered with
  the description unchanged.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  @external
  Scenario Outline: A PSTN caller holds with <hold> and resumes; Teams sees a=inactive
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller puts the call on hold with <hold>
    Then the SBC sends the hub a re-INVITE with a=inactive
    And audio stops both ways
    When the PSTN caller resumes the call
    Then the SBC sends the hub a re-INVITE with a=sendrecv
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

    Examples:
      | hold       |
      | a=sendonly |
      | a=recvonly |
      | c=0.0.0.0  |

  @external
  Scenario: A Teams user holds and resumes; the carrier sees a=inactive
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the Teams user puts the call on hold
    Then the SBC sends the carrier a re-INVITE with a=inactive
    And audio stops both ways
    When the Teams user resumes the call
    Then the SBC sends the carrier a re-INVITE with a=sendrecv
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: A Teams user holds before the carrier's ACK is in; the SBC holds the carrier once it may
    # RFC 3261 §14.1: no re-INVITE on a dialog whose INVITE is still in
    # progress. Over a slow carrier link the hub's hold arrives while the
    # carrier's ACK is on its way: the SBC must send the hold when the ACK
    # lands, not drop it (found by `drlab certify --seeds 6`, seed 6).
    Given the link between the carrier and the SBC has 200 ms of latency
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the Teams user puts the call on hold
    Then the SBC sends the carrier a re-INVITE with a=inactive
    And audio stops both ways
    When the Teams user resumes the call
    Then the SBC sends the carrier a re-INVITE with a=sendrecv
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: A refresh that changes nothing is answered with the description unchanged
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the phone answers
    When the hub refreshes the call with an unchanged description
    Then the SBC answers the hub's refresh with its description unchanged
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: An SBC that holds Teams with a=sendonly is caught
    Given the SBC is misconfigured to hold with a=sendonly
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the PSTN caller puts the call on hold with a=sendonly
    Then the hub reports that the SBC held the call with a=sendonly
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: Both sides hold at once: the crossing re-INVITEs meet 491 and are sent again
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller and the Teams user put the call on hold at once
    Then a re-INVITE met 491 and was sent again
    And audio stops both ways
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
