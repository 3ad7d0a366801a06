@transfer @call
Feature: Transfers the hub asks of the SBC
  Direct Routing picks how to transfer from the SBC's Allow (behaviour
  §5). With REFER listed the hub sends REFER: the SBC answers 202, calls
  the Refer-To back through the hub with the Referred-By unchanged, and
  reports progress in NOTIFYs; on the final 200 the hub ends the old leg.
  Without REFER the transfer happens inside Teams. A call queue's agent
  takes a call over with an INVITE carrying Replaces. Either way the PSTN
  caller stays on the same PSTN call and hears the new party.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  Scenario: A Teams user transfers a PSTN caller to another Teams user by REFER
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the PSTN caller hears Bob's ringback before he answers
    And the transfer to Bob completes by REFER
    And the SBC accepts the REFER and calls the Refer-To back with the Referred-By unchanged
    And the SBC reports the transfer in NOTIFYs: 100, 180, 183, 200
    And the PSTN caller hears Bob, decrypted and in order
    And the carrier has been sent 0 new calls
    And the hub holds nothing against the SBC
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: A consultative transfer: the caller is held, then transferred
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice puts the call on hold to consult
    Then the SBC sends the carrier a re-INVITE with a=inactive
    When Alice transfers the call to Bob
    Then the transfer to Bob completes by REFER
    And the SBC sends the carrier a re-INVITE with a=sendrecv
    And the PSTN caller hears Bob, decrypted and in order
    And the carrier has been sent 0 new calls
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: Without REFER in the SBC's Allow the hub transfers inside Teams
    Given the SBC leaves transfers to the hub
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the transfer to Bob completes inside Teams
    And no REFER was sent
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  @replaces
  Scenario: A call queue's agent takes the call over with an INVITE with Replaces
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Bob takes Alice's call from the call queue
    Then the SBC answers the INVITE with Replaces with 200
    And the transfer to Bob completes by INVITE with Replaces
    And the PSTN caller hears Bob, decrypted and in order
    And the carrier has been sent 0 new calls
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  @replaces
  Scenario: An INVITE with Replaces for a dialog the SBC does not have gets 481
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the hub sends the SBC an INVITE replacing Alice's call but naming a dialog the SBC does not have
    Then the SBC answers the INVITE with Replaces with 481
    And the transfer to Bob fails: 481
    And the PSTN caller hears Alice, decrypted and in order
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: An SBC that sends BYE before the transfer completes loses the call
    Given the SBC is misconfigured to send BYE before a transfer completes
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the transfer to Bob fails: the SBC sent BYE before the transfer completed
    And the hub holds against the SBC: "BYE before the transfer completed"
    And the PSTN caller hears the call end

  Scenario: An SBC that sends no NOTIFY loses the call when the transfer times out
    Given the SBC is misconfigured to send no NOTIFY for a transfer
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the transfer to Bob fails: no NOTIFY within 32 s
    And the hub holds against the SBC: "no NOTIFY within 32 s"
    And the PSTN caller hears the call end

  Scenario: An SBC that changes the Referred-By loses the transfer
    Given the SBC is misconfigured to rewrite the Referred-By of a transfer
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the transfer to Bob fails: the transfer target answered 403
    And the hub holds against the SBC: "Referred-By"
    And the PSTN caller hears the call end

  Scenario: A Teams user transfers a PSTN caller to a PSTN number
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to +4930654321
    Then the transfer to +4930654321 completes by REFER
    And the SBC accepts the REFER and calls the Refer-To back with the Referred-By unchanged
    And the carrier has been sent 1 new call
    And the PSTN caller and PSTN phone +4930654321 hear each other, in order
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: A Teams user who called a PSTN number transfers the call to another Teams user, who hangs up
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the phone answers
    When Alice transfers the call to Bob
    Then the transfer to Bob completes by REFER
    And the SBC accepts the REFER and calls the Refer-To back with the Referred-By unchanged
    And the SBC reports the transfer in NOTIFYs: 100, 180, 183, 200
    And the PSTN caller hears Bob, decrypted and in order
    And the carrier has been sent 1 new call
    When Bob hangs up
    Then the PSTN caller hears the call end

  Scenario: An SBC that passes REFER on to the carrier: the carrier's switch calls back
    Given the SBC passes transfers on to the carrier
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the transfer to Bob completes by REFER
    And the SBC REFERs the carrier, which calls the Refer-To back
    And the SBC accepts the REFER and calls the Refer-To back with the Referred-By unchanged
    And the PSTN caller hears Bob, decrypted and in order
    And the carrier has been sent 0 new calls
    And the hub holds nothing against the SBC
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: A REFER that comes before the carrier's ACK is passed on once the ACK is in
    # Over a slow carrier link the hub's REFER reaches the SBC before the
    # carrier's ACK: the SBC accepts it and REFERs the carrier when the
    # ACK lands (found by `drlab certify --seeds 6`, seed 6).
    Given the SBC passes transfers on to the carrier
    And the link between the carrier and the SBC has 200 ms of latency
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to Bob
    Then the transfer to Bob completes by REFER
    And the SBC REFERs the carrier, which calls the Refer-To back
    And the PSTN caller hears Bob, decrypted and in order
    And the hub holds nothing against the SBC
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: A call a Teams user placed, transferred by REFER passed on to the carrier
    Given the SBC passes transfers on to the carrier
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the phone answers
    When Alice transfers the call to Bob
    Then the transfer to Bob completes by REFER
    And the SBC REFERs the carrier, which calls the Refer-To back
    And the PSTN caller hears Bob, decrypted and in order
    When Bob hangs up
    Then the PSTN caller hears the call end
