@session-timer @call
Feature: Session timers (RFC 4028)
  The hub offers a session timer on every non-bypass call. On calls the SBC
  sent, the SBC refreshes (the hub's 200 says refresher=uac) with a
  re-INVITE at half the interval; on calls the hub sent, the hub does. A
  session nobody refreshes ends before it expires: the hub sends BYE at the
  interval minus min(32 s, a third of it), "after several minutes without
  error" as the field reports describe.

  @external
  Scenario: The SBC refreshes a 90 s session and the call lives on
    Given the hub asks for a session timer of 90 seconds
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When 200 seconds pass
    Then the SBC has sent the hub 4 re-INVITEs
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: An SBC that never refreshes loses the call when the session expires
    Given the hub asks for a session timer of 90 seconds
    And the SBC is registered in the tenant as sbc.example.com
    And the SBC is misconfigured to never refresh sessions
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the hub ends the call with a BYE about 60 seconds after its 200
    And the PSTN caller hears the call end

  Scenario: The hub refreshes the calls it sent
    Given the hub asks for a session timer of 90 seconds
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the phone rings
    And the phone answers
    When 100 seconds pass
    Then the hub has sent the SBC 2 re-INVITEs
    And audio flows both ways, decrypted and in order
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: An SBC set to refresh with UPDATE refreshes the hub by re-INVITE: the hub's Allow has no UPDATE
    Given the hub asks for a session timer of 90 seconds
    And the SBC is registered in the tenant as sbc.example.com
    And the SBC refreshes sessions with UPDATE where the peer allows it
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When 100 seconds pass
    Then the SBC has sent the hub 2 re-INVITEs
    And the SBC has sent the hub 0 UPDATEs
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: An SBC that refreshes with an UPDATE the hub does not allow loses the call at expiry
    Given the hub asks for a session timer of 90 seconds
    And the SBC is registered in the tenant as sbc.example.com
    And the SBC is misconfigured to refresh with UPDATE the hub does not allow
    And the hub marks the SBC active
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the hub ends the call with a BYE about 60 seconds after its 200
    And the SBC has sent the hub 1 UPDATE, each answered 501
    And the PSTN caller hears the call end
