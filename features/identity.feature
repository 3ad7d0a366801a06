@identity @outbound
Feature: The caller's identity on calls from Teams (ForwardPai)
  With ForwardPai on the SBC's gateway (off by default) the hub asserts the
  billed user's number in P-Asserted-Identity, and adds Privacy: id when the
  caller hides their number; without it, it sends neither (behaviour §3.3).
  The reference SBC passes both on to the carrier, whom it trusts (RFC
  3325); a hidden caller stays hidden in From.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  Scenario: Without ForwardPai the hub asserts nothing
    When Teams user Alice dials +4930123456
    Then the hub's INVITE to the SBC carries no P-Asserted-Identity and no Privacy
    And the SBC's INVITE to the carrier carries no P-Asserted-Identity and no Privacy
    And the phone rings
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: With ForwardPai a hidden caller's number is asserted with Privacy: id
    Given the SBC's gateway has ForwardPai on
    When Teams user Dave dials +4930123456
    Then the hub's INVITE to the SBC carries P-Asserted-Identity +4989000004 and Privacy: id
    And the hub sends the INVITE to sbc.example.com from anonymous@anonymous.invalid
    And the SBC sends the INVITE to carrier.example.net from anonymous@anonymous.invalid
    And the SBC's INVITE to the carrier carries P-Asserted-Identity 089000004 and Privacy: id
    And the phone rings
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: With ForwardPai a shown number is asserted without Privacy
    Given the SBC's gateway has ForwardPai on
    When Teams user Alice dials +4930123456
    Then the hub's INVITE to the SBC carries P-Asserted-Identity +4989000001 and no Privacy
    And the SBC's INVITE to the carrier carries P-Asserted-Identity 089000001 and no Privacy
    And the phone rings
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: A call a Teams user forwards carries History-Info with ForwardCallHistory
    Given the SBC's gateway has ForwardCallHistory on
    And Teams user Bob forwards calls to +4930654321
    When PSTN caller +4930123456 calls +4989000002
    Then the hub's INVITE to the SBC for +4930654321 carries History-Info: +4989000002 forwarded to +4930654321
    And the SBC passes the hub's History-Info on to the carrier
    And the PSTN caller and PSTN phone +4930654321 hear each other, in order
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: Without ForwardCallHistory a forwarded call carries no History-Info
    Given Teams user Bob forwards calls to +4930654321
    When PSTN caller +4930123456 calls +4989000002
    Then the hub's INVITE to the SBC for +4930654321 carries no History-Info
    And the PSTN caller and PSTN phone +4930654321 hear each other, in order
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: A transfer to a PSTN number carries no History-Info, even with ForwardCallHistory
    Given the SBC's gateway has ForwardCallHistory on
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Alice transfers the call to +4930654321
    Then the hub's INVITE to the SBC for +4930654321 carries no History-Info
    And the transfer to +4930654321 completes by REFER
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  Scenario: A forwarded call from a hidden caller stays anonymous
    Given Teams user Bob forwards calls to +4930654321
    When a carrier sends the SBC an INVITE for 089000002 from anonymous
    Then the hub sends the INVITE to sbc.example.com from anonymous@anonymous.invalid
    And the SBC answers it with 200
