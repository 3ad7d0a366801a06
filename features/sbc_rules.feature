@sbc @conformance
Feature: What the reference SBC refuses, and how it ends calls it cannot keep
  A scripted peer stands where the carrier (UDP) or the hub (TLS with the
  hub's certificate) stands and sends what a faulty one would. The SBC must
  answer as RFC 3261 says, and free both legs of a call whose 200 OK is
  never acknowledged.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  @external
  Scenario: An INVITE without Contact is refused with 400
    When a carrier sends the SBC an INVITE for 089000001 without Contact
    Then the SBC answers it with 400

  @external
  Scenario: An INVITE that may not be forwarded again is refused with 483
    When a carrier sends the SBC an INVITE for 089000001 with Max-Forwards: 0
    Then the SBC answers it with 483

  @external
  Scenario: An INVITE requiring an unknown extension is refused with 420 naming it
    When a carrier sends the SBC an INVITE for 089000001 with Require: x-drlab-unknown
    Then the SBC answers it with 420
    And the SBC's answer carries Unsupported: x-drlab-unknown

  @external
  Scenario: An anonymous PSTN caller reaches the Teams user as anonymous
    When a carrier sends the SBC an INVITE for 089000001 from anonymous
    Then the SBC sends the INVITE to sip.pstnhub.microsoft.com from anonymous@anonymous.invalid
    And the SBC answers it with 200

  @long-timer @external
  Scenario: A 200 OK the carrier never ACKs ends both legs after 64*T1
    # The scripted carrier sends no audio: without this the hub would end
    # the call first, at 15 s (case 9.58).
    Given the hub does not end calls that carry no media
    When a carrier sends the SBC an INVITE for 089000001 and never ACKs
    Then the SBC answers it with 200
    And the SBC ends both legs with BYE about 32 seconds after its 200

  @long-timer @external
  Scenario: A 200 OK the hub never ACKs ends both legs after 64*T1
    When a hub sends the SBC an INVITE for +4930123456 and never ACKs
    Then the SBC answers it with 200
    And the SBC ends both legs with BYE about 32 seconds after its 200
