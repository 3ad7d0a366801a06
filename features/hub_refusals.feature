@hub @conformance
Feature: What the hub refuses, and how
  A scripted client holding the SBC's certificate sends what a faulty SBC
  would; the simulated hub must refuse it the way Direct Routing does.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com

  Scenario: OPTIONS with an IP address in Contact is refused with 403
    When a client with the SBC's certificate sends OPTIONS with Contact <sip:192.0.2.10:5061;transport=tls>
    Then the hub answers it with 403

  Scenario: OPTIONS without Contact is refused with 400
    When a client with the SBC's certificate sends OPTIONS without Contact
    Then the hub answers it with 400

  Scenario: OPTIONS from an FQDN no trunk is configured for is refused with 403
    When a client with the SBC's certificate sends OPTIONS with Contact <sip:sbc9.example.org:5061;transport=tls>
    Then the hub answers it with 403

  Scenario: An INVITE offering plain RTP is refused with 488
    When a client with the SBC's certificate sends an INVITE for +4989000001 offering RTP/AVP
    Then the hub answers it with 488

  Scenario: An INVITE requiring 100rel is refused with 420
    When a client with the SBC's certificate sends an INVITE for +4989000001 with Require: 100rel
    Then the hub answers it with 420
    And the answer carries Unsupported: 100rel

  Scenario: An INVITE to a number without a leading + is refused with 404
    When a client with the SBC's certificate sends an INVITE for 089000001
    Then the hub answers it with 404

  Scenario: A 200 OK the SBC never ACKs ends the call after about four seconds
    When a client with the SBC's certificate sends an INVITE for +4989000001 and never ACKs
    Then the hub answers it with 200
    And the hub ends the call with a BYE giving reason 1106 about 4 seconds after its 200
    And the hub's last BYE carries Q.850 cause 102 and Microsoft code 1106
    And the trace matches its snapshot

  Scenario: An INVITE offering only codecs Teams does not support is refused with 488
    When a client with the SBC's certificate sends an INVITE for +4989000001 offering only AMR
    Then the hub answers it with 488

  Scenario: An INVITE with c=0.0.0.0 is refused with 488
    When a client with the SBC's certificate sends an INVITE for +4989000001 with c=0.0.0.0
    Then the hub answers it with 488

  Scenario: An INVITE without SDP is refused: no delayed offer
    When a client with the SBC's certificate sends an INVITE for +4989000001 without SDP
    Then the hub answers it with 488

  Scenario: An INVITE replacing a call the hub holds is rejected
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When a client with the SBC's certificate sends an INVITE for +4989000001 with a Replaces header naming the hub's current call
    Then the hub answers it with 403
    When the PSTN caller hangs up
    Then the PSTN caller hears the call end

  @replaces
  Scenario: An INVITE with Replaces naming a dialog the hub does not know gets 404 with 10202
    When a client with the SBC's certificate sends an INVITE for +4989000001 with a Replaces header
    Then the hub answers it with 404
    And the hub's last refusal carries Q.850 cause 1 and Microsoft code 10202

  Scenario: An INVITE with an IP address in Record-Route is refused with 403
    When a client with the SBC's certificate sends an INVITE for +4989000001 with an IP address in Record-Route
    Then the hub answers it with 403

  Scenario: Only the first Contact counts
    When a client with the SBC's certificate sends an INVITE for +4989000001 with an IP address first of two Contacts
    Then the hub answers it with 403

  Scenario: The top Record-Route, not Contact, names the SBC
    When a client with the SBC's certificate sends OPTIONS with Contact <sip:sbc9.example.org:5061;transport=tls> and Record-Route <sip:sbc.example.com:5061;transport=tls;lr>
    Then the hub answers it with 200

  Scenario: A Record-Route FQDN no trunk is configured for is refused even with a good Contact
    When a client with the SBC's certificate sends OPTIONS with Contact <sip:sbc.example.com:5061;transport=tls> and Record-Route <sip:sbc9.example.org:5061;transport=tls;lr>
    Then the hub answers it with 403
