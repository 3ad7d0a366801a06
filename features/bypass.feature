@bypass @media
Feature: Media bypass: an ICE-lite SBC and Teams clients that run full ICE
  With MediaBypass on the SBC's gateway, media goes between the SBC and
  the Teams clients themselves. The SBC is ICE-lite (RFC 8445 §2.5): one
  IPv4 host candidate, the same credentials from the first 18x to the
  200, every connectivity check answered and none sent. Each Teams client
  is a host of its own that runs full ICE as the controlling agent
  (regular nomination) and sends SRTP straight to the SBC's candidate
  (behaviour §7; cases 9.26, 9.29, 9.57, 9.58).

  Background:
    Given the SBC's gateway has MediaBypass on
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active

  @inbound
  Scenario: A PSTN caller reaches a Teams user by media bypass: two clients check, one answers
    When PSTN caller +4930123456 calls +4989000001
    Then the SBC offers the hub one ICE-lite host candidate, the same in every SDP it sends
    And the hub sends a 183 with SDP from each of 2 Teams clients, on To-tags of their own
    And the Teams user answers
    And audio flows both ways, decrypted and in order
    And the PSTN caller heard the first Teams client's early media, then the answering client
    And the SBC answers the ICE checks of every Teams client and sends none
    And the answering Teams client nominates its pair and hears the SBC directly
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  @outbound
  Scenario: A Teams user calls a PSTN number by media bypass
    When Teams user Alice dials +4930123456
    Then the hub's INVITE to the SBC offers no session timer
    And the phone rings
    And the phone answers
    And audio flows both ways, decrypted and in order
    And the SBC offers the hub one ICE-lite host candidate, the same in every SDP it sends
    And the answering Teams client nominates its pair and hears the SBC directly
    When the Teams user hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  @hub
  Scenario: Voicemail on a bypass trunk takes its media through a media processor
    When a client with the SBC's certificate sends an INVITE for +4989000001 to voicemail, offering ICE
    Then the hub answers it with 200
    And the hub's answer comes from the media processor, without ICE

  @hub @q850
  Scenario: An SBC on a bypass trunk that offers no ICE candidates is refused with 488 and 531027
    Given the SBC is misconfigured to offer no ICE candidates
    When PSTN caller +4930123456 calls +4989000001
    Then the hub refuses the INVITE with 488
    And the hub's last refusal carries Q.850 cause 127 and Microsoft code 531027
    And the PSTN caller hears 488
    And the trace matches its snapshot

  @media-timeout
  Scenario: A Teams client's check with a wrong password is refused, and the hub ends the silent call
    Given the Teams clients check the SBC with a wrong password
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And the SBC refuses the Teams client's checks with 401
    And the hub ends the call for lack of media about 15 seconds after it was answered
    And the PSTN caller hears the call end
    And the trace matches its snapshot

  @transfer
  Scenario: A bypass call moved to a media processor restarts ICE
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    And audio flows both ways, decrypted and in order
    When Teams user Alice's call moves to a media processor
    Then the hub re-INVITEs the SBC with new ICE credentials, and the SBC answers with new ones of its own
    And audio flows both ways, decrypted and in order
    And the media processor nominates its pair and hears the SBC directly
    And the hub holds nothing against the SBC
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
    And the trace matches its snapshot

  @transfer
  Scenario: An SBC that keeps its ICE credentials when the hub restarts ICE is caught
    Given the SBC is misconfigured to keep its ICE credentials on an ICE restart
    When PSTN caller +4930123456 calls +4989000001
    Then the Teams user answers
    When Teams user Alice's call moves to a media processor
    Then the hub holds against the SBC: "kept its ICE credentials when the hub restarted ICE (case 9.49)"
    When the PSTN caller hangs up
    Then both legs end with BYE and 200
