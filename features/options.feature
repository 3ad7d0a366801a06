@health
Feature: SBC health monitoring with SIP OPTIONS
  Direct Routing waits for the SBC to start the OPTIONS exchange, answers
  on the SBC's own TLS connection, then pings the SBC's Contact FQDN on a
  connection of its own. Only when both directions are answered is the
  SBC shown as Active.

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
