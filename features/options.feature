@health
Feature: SBC health monitoring with SIP OPTIONS
  Direct Routing waits for the SBC to start the OPTIONS exchange, answers
  on the SBC's own TLS connection, then pings the SBC's Contact FQDN on a
  connection of its own. Only when both directions are answered is the
  SBC shown as Active.

  @external @external-smoke
  Scenario: The hub marks the SBC active after OPTIONS both ways
    Given the SBC is registered in the tenant as sbc.example.com
    When the SBC starts
    Then the SBC sends OPTIONS to sip.pstnhub.microsoft.com with its FQDN in Contact
    And the hub answers 200 on the same connection
    And the hub sends its own OPTIONS to sbc.example.com
    And the hub marks the SBC active
    And the trace matches its snapshot

  Scenario: An SBC that stops sending OPTIONS is demoted after five minutes and comes back
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When the SBC stops sending OPTIONS
    Then the hub shows the SBC as "Active" for 4 minutes
    And the hub shows the SBC as "Demoted" within 3 minutes
    When the SBC sends OPTIONS again
    Then the hub shows the SBC as "Active" within 1 minute

  Scenario: A configured SBC that never sends OPTIONS shows "Warning, no SIP options" and gets none
    Given the SBC is registered in the tenant as sbc.example.com
    And the SBC sends no OPTIONS
    When 3 minutes pass
    Then the hub shows the SBC as "Warning, no SIP options" for 1 minute
    And the hub has sent no OPTIONS to the SBC

  Scenario: OPTIONS whose Contact FQDN the TLS certificate does not cover is refused with 403
    # sbc2.example.com is paired with the tenant; the client shows sbc.example.com's certificate.
    Given the tenant routes outbound calls to sbc2.example.com first, which answers INVITEs with 503
    And the SBC is registered in the tenant as sbc.example.com
    When a client with the SBC's certificate sends OPTIONS with Contact <sip:sbc2.example.com:5061;transport=tls>
    Then the hub answers it with 403
