@media-timeout @media
Feature: A call without media is ended
  Microsoft: a Direct Routing call "drops after approximately 10 to 20
  seconds" when no media is received or ICE fails (KB-IN, case 9.58). The
  simulated hub ends an answered call from which its media processor (or,
  in bypass, the Teams client) has received no audio for 15 seconds while
  not on hold, with a BYE whose Reason says so. The reference SBC has a
  timeout of its own (`media_timeout_secs`, 60 by default): a call on
  which nothing arrives from either leg ends on both.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  Scenario: A call whose audio never reaches the hub is ended after about 15 seconds
    Given the link from the SBC to the media processor loses 100 % of packets
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the hub ends the call for lack of media about 15 seconds after it was answered
    And the PSTN caller hears the call end
    And the trace matches its snapshot

  Scenario: The SBC ends a call on which no media arrives from either side
    Given the hub does not end calls that carry no media
    And the SBC ends calls without media after 20 seconds
    And the link between the SBC and the media processor loses 100 % of packets
    And the link between the SBC and phone-4930123456.carrier.example.net loses 100 % of packets
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the SBC ends both legs for lack of media about 20 seconds after the answer
    And the PSTN caller hears the call end
    And the trace matches its snapshot
