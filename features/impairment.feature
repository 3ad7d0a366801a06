@impairment @call
Feature: Calls over impaired links
  Links lose packets at random or in bursts, delay them unevenly, reorder
  and duplicate them, and go down for a while. Each impairment is drawn
  from the world's seed, per link and direction, so a run replays exactly.
  Datagrams (SIP over UDP, RTP, SRTP) suffer all of it; TLS to the hub is
  only delayed, as a stream's lost segment is a retransmission. The SBC
  must set calls up through it (SIP over UDP retransmits, RFC 3261 §17),
  relay what arrives, and end the calls cleanly.

  Background:
    Given the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  Scenario: A call over a carrier link that loses 5 % of packets in bursts of 3
    Given the link between the carrier and the SBC loses 5 % of packets in bursts of 3
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And over 20 s audio flows both ways with 0.5 to 12 % of frames lost
    And the Teams side hears the other side with MOS below 4.2
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: SRTP toward Teams with 2 % random loss and 30 ms of jitter
    # Jitter beyond the 20 ms between frames reorders them: the receivers
    # take SRTP out of order within RFC 3711's replay window.
    Given the link between the SBC and the media processor loses 2 % of packets
    And the link between the SBC and the media processor has 30 ms of jitter
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And over 20 s audio flows both ways with 0 to 6 % of frames lost
    And the Teams side hears the other side with MOS below 4.3
    And the PSTN phone hears the other side with MOS below 4.3
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: The carrier link goes down for 3 s in a call; the audio comes back
    Given the link between the carrier and the SBC is down from 5 s to 8 s
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And over 20 s audio flows both ways with 14 to 16 % of frames lost
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: A carrier link that duplicates 10 % of packets loses no call and no audio
    Given the link between the carrier and the SBC duplicates 10 % of packets
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And over 20 s audio flows both ways with 0 to 0 % of frames lost
    And the Teams side hears the other side with MOS above 4.3
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: One-way loss: only what the SBC sends to the carrier is lost
    Given the link from the SBC to the carrier loses 10 % of packets
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And over 20 s the PSTN phone loses 7 to 13 % of frames and the Teams side 0 to 0 %
    When the PSTN caller hangs up
    Then both legs end with BYE and 200

  Scenario: The link to the hub is down for the first 4 s; the INVITE over TLS waits, then the call goes through
    # A stream is held, not lossy: what the SBC sends over TLS during the
    # outage arrives when the link is back (RFC 3261 Timer B, 32 s, is far).
    Given the link between the SBC and the hub is down from 0 s to 4 s
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the hub answers the SBC's INVITE no earlier than 4 s
    And audio flows both ways, decrypted and in order
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
