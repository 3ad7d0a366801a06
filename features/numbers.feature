@carrier @numbers
Feature: Numbers as carriers write them
  Carriers send calling and called numbers national (030123456),
  international (004930123456), E.164 (+4930123456) or as tel: URIs; Teams
  takes E.164 only (behaviour §3.1). The SBC normalises every form with its
  country code, or with the rules of its configuration where a carrier
  writes numbers its own way.

  @external
  Scenario Outline: A caller number written <format> reaches Teams as E.164
    Given the SBC is registered in the tenant as sbc.example.com
    And Teams user Bob is busy
    And the hub marks the SBC active
    When a carrier sends the SBC an INVITE for <called> from <caller>
    Then the SBC's INVITE to sip.pstnhub.microsoft.com is from +4930123456 for +4989000002
    And the SBC answers it with 486

    Examples:
      | format        | called         | caller          |
      | nationally    | 089000002      | 030123456       |
      | internationally | 004989000002 | 004930123456    |
      | as E.164      | +4989000002    | +4930123456     |
      | as a tel: URI | 089000002      | tel:+4930123456 |

  Scenario: A carrier that sends local numbers: a rule makes them E.164
    Given the SBC rewrites carrier numbers matching ^(\d{6})$ to +4989$1
    And the SBC is registered in the tenant as sbc.example.com
    And Teams user Bob is busy
    And the hub marks the SBC active
    When a carrier sends the SBC an INVITE for 000002 from 030123456
    Then the SBC's INVITE to sip.pstnhub.microsoft.com is from +4930123456 for +4989000002
    And the SBC answers it with 486

  Scenario: A carrier that takes international numbers: a rule writes them so
    Given the SBC writes numbers to the carrier starting with +49 as 0049
    And the SBC is registered in the tenant as sbc.example.com
    And the hub marks the SBC active
    When Teams user Alice dials +4930123456
    Then the SBC's INVITE to the carrier is for 004930123456
    And the phone answers
    When the Teams user hangs up
    Then both legs end with BYE and 200

  @external
  Scenario: A caller who withholds the number (Privacy: id) reaches Teams as anonymous
    Given the SBC is registered in the tenant as sbc.example.com
    And Teams user Bob is busy
    And the hub marks the SBC active
    When a carrier sends the SBC an INVITE for 089000002 withholding the caller's number
    Then the SBC sends the INVITE to sip.pstnhub.microsoft.com from anonymous@anonymous.invalid
    And the SBC answers it with 486
