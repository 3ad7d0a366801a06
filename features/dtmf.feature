@carrier @dtmf @call
Feature: DTMF digits end to end (RFC 4733 telephone-events)
  Keys pressed at either end cross the SBC as RFC 4733 telephone-events,
  one event per key (updates every 20 ms, the end sent three times), and
  arrive intact and in order, also during early media. Where the carrier
  numbered telephone-event differently from Teams (96 against 101), the
  SBC offers Teams 101 and renumbers the events both ways (RFC 3264 §6.1:
  each side's payload numbers are its own).

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  @external
  Scenario: Digits both ways in an inbound call
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller presses 1234#
    Then the Teams user receives the digits 1234#
    When the Teams user presses 9*0
    Then the PSTN caller receives the digits 9*0
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: A carrier that numbers telephone-event 96: the SBC renumbers to Teams' 101 and back
    Given PSTN phone +4930123456 numbers telephone-event 96
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When the PSTN caller presses 0815
    Then the Teams user receives the digits 0815
    When the Teams user presses 42
    Then the PSTN caller receives the digits 42
    And the SBC renumbered telephone-events both ways
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: Digits during early media, before the PSTN phone answers
    Given PSTN phones answer 10 s after ringing
    And PSTN phone +4930123456 sends early media first
    When Teams user Alice dials +4930123456
    Then the Teams user hears the phone's early media before any answer
    When the Teams user presses 7#
    Then the PSTN phone receives the digits 7# before any answer
    When the PSTN phone presses 3
    Then the Teams user receives the digits 3 before any answer
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200
