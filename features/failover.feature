@failover
Feature: Failover, both ways
  Outbound, the hub moves a call across the tenant's SBCs: no 18x within
  FailoverTimeSeconds (10 s) or a final 408, 503 or 504 before any 18x
  sends it to the next SBC; after a 180 or 183, or on 404, 486 or 603, the
  call ends there; an SBC the hub cannot connect to is retried from another
  proxy first. Here the tenant's voice route of first priority holds
  sbc2.example.com, a scripted SBC that fails the way each scenario says;
  the second holds the SBC.

  Inbound, the SBC moves a call to the next hub proxy on 503 with
  Retry-After and leaves that proxy alone meanwhile, and never retries a
  call the Teams user declined. The hub checks both from what it receives.

  Scenario: An SBC answering 503 before ringing: the hub tries the next SBC
    Given the tenant routes outbound calls to sbc2.example.com first, which answers INVITEs with 503
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the hub sends the INVITE to sbc2.example.com
    And the hub sends the INVITE to sbc.example.com
    And the phone rings
    And the phone answers
    And the hub records that sbc2.example.com failed with "503 Service Unavailable from the SBC (560503)"
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  Scenario: An SBC silent past 100 Trying: CANCEL after FailoverTimeSeconds, then the next SBC
    Given the tenant routes outbound calls to sbc2.example.com first, which never answers INVITEs
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the hub sends the INVITE to sbc2.example.com
    And the hub CANCELs the INVITE to sbc2.example.com about 10 seconds after sending it
    And the hub sends the INVITE to sbc.example.com
    And the phone rings
    And the phone answers
    And the hub records that sbc2.example.com failed with "(500001)"
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: No failover after ringing: 180 then 503 ends the call
    Given the tenant routes outbound calls to sbc2.example.com first, which rings and then answers 503
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the hub sends the INVITE to sbc2.example.com
    And the Teams user's call fails with "503 Service Unavailable from SBC (560503)"
    And the hub sends no INVITE to sbc.example.com

  Scenario: 486 from an SBC is not a failover code: the call ends
    Given the tenant routes outbound calls to sbc2.example.com first, which answers INVITEs with 486
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the hub sends the INVITE to sbc2.example.com
    And the Teams user's call fails with "486 Busy Here from SBC (560486)"
    And the hub sends no INVITE to sbc.example.com

  Scenario: An SBC the hub cannot connect to: retried from another proxy, then the next SBC
    Given the tenant routes outbound calls to sbc2.example.com first, which is down
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the hub sends the INVITE to sbc.example.com
    And the phone rings
    And the phone answers
    And the hub records that sbc2.example.com failed with "retried from sip2.pstnhub.microsoft.com"
    And the hub records that sbc2.example.com failed with "504 no proxy could reach sbc2.example.com (5690xx"
    When the Teams user hangs up
    Then both legs end with BYE and 200

  Scenario: A demoted SBC is tried after a healthy one, and still tried
    # One voice route with both SBCs: the order is by health, so sbc2
    # (Active) comes first whatever the seed; the demoted SBC still gets
    # the call before it fails (behaviour §4, MON).
    Given the tenant routes outbound calls to sbc2.example.com as well, which answers INVITEs with 503
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When the SBC stops sending OPTIONS
    Then the hub shows the SBC as "Demoted" within 6 minutes
    When Teams user Alice dials +4930123456
    Then the hub sends the INVITE to sbc2.example.com
    And the hub sends the INVITE to sbc.example.com
    And the phone rings
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: The SBC moves on after 503 with Retry-After and leaves that proxy alone meanwhile
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    And the hub proxy sip.pstnhub.microsoft.com answers INVITEs with 503 and Retry-After 60
    When PSTN caller +4930123456 calls +4989000001
    Then the SBC sends the INVITE to sip2.pstnhub.microsoft.com with user=phone and E.164 numbers
    And the Teams user answers
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the SBC sent 1 INVITE to sip.pstnhub.microsoft.com
    And the SBC sent 2 INVITEs to sip2.pstnhub.microsoft.com
    And the hub holds nothing against the SBC
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: An SBC that ignores Retry-After is caught
    Given the SBC is registered in the tenant as sbc.example.com
    And the SBC is misconfigured to ignore Retry-After
    And the hub marks the SBC active
    And the hub proxy sip.pstnhub.microsoft.com answers INVITEs with 503 and Retry-After 60
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    When PSTN caller +4930123456 calls +4989000001
    Then the hub reports that the SBC sent an INVITE within Retry-After
    And the Teams user answers
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: A call the Teams user declines with 603 is not retried
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    And Teams user Bob declines calls
    When PSTN caller +4930123456 calls +4989000002
    Then the hub refuses the INVITE with 603
    And the PSTN caller hears 603
    And the SBC sent exactly one INVITE to the hub
    And the hub holds nothing against the SBC

  Scenario: An SBC that retries after 603 is caught
    Given the SBC is registered in the tenant as sbc.example.com
    And the SBC is misconfigured to fail over on every failure
    And the hub marks the SBC active
    And Teams user Bob declines calls
    When PSTN caller +4930123456 calls +4989000002
    Then the hub refuses the INVITE with 603
    And the hub reports that the SBC retried the call after 603
