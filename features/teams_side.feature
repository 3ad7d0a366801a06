@hub @conformance
Feature: What the Teams side does with calls it takes
  The tenant's users as Direct Routing treats them: voicemail on request,
  the codecs Teams supports, and callers who hide their number.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com

  Scenario: ;opaque=app:voicemail goes straight to voicemail, no endpoint rings
    When a client with the SBC's certificate sends an INVITE for +4989000001 to voicemail
    Then the hub answers it with 200
    And the hub sent no 180 for it

  Scenario: An INVITE offering only G.729 is answered with G.729
    When a client with the SBC's certificate sends an INVITE for +4989000001 offering only G.729
    Then the hub answers it with 200
    And the hub's answer uses G729

  Scenario: A Teams user who hides their number calls out as anonymous
    Given the hub marks the SBC active
    When Teams user Dave dials +4930123456
    Then the hub sends the INVITE to sbc.example.com from anonymous@anonymous.invalid
    And the SBC sends the INVITE to carrier.example.net from anonymous@anonymous.invalid
    And the phone rings
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200
