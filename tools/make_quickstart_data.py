"""Write the quickstart QA dataset (SQuAD v1.1 JSON) from the text held in this file.

The domain is the fictional Velmora Municipal Tramway. All text is original, written for
qa-core (Apache-2.0). Answer offsets are computed here, never typed by hand: each answer
is a tuple (question, answer) or (question, answer, occurrence), where `occurrence` is the
0-based index of the intended match when the answer text appears more than once in its
paragraph. Any answer that is missing, ambiguous without an occurrence, or given an
out-of-range occurrence stops the script with an error naming the question.

Usage:
    python tools/make_quickstart_data.py                 # writes data/quickstart/{train,val}.json
    python tools/make_quickstart_data.py --out-dir DIR   # writes DIR/{train,val}.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "quickstart"
ID_PREFIX = "qs"
MIN_WORDS, MAX_WORDS = 60, 150

# Each article goes wholly to one split so that no paragraph is seen in both.
ARTICLES = [
    {
        "title": "History of the Velmora Tramway",
        "split": "train",
        "paragraphs": [
            (
                "The Velmora Municipal Tramway opened on 14 May 1911 with a single line of 4.2 "
                "kilometres between Quay Square and the Orchard Gate. The first cars were "
                "horse-drawn, but the city council voted in 1913 to electrify the route at 600 "
                "volts direct current, and electric service began on 2 March 1914. The engineer "
                "in charge of the conversion was Ilse Marrow, who later served as general manager "
                "until 1936. By 1925 the network had grown to five lines and 31 kilometres of "
                "double track, carrying around nine million passengers a year.",
                [
                    ("When did the tramway first open to passengers?", "14 May 1911"),
                    ("How long was the original line?", "4.2 kilometres"),
                    ("What voltage was chosen when the route was electrified?", "600 volts direct current"),
                    ("Who oversaw the conversion to electric traction?", "Ilse Marrow"),
                    ("How many lines were there by the mid-1920s?", "five"),
                    ("Roughly how many people rode the trams each year in 1925?", "nine million passengers"),
                ],
            ),
            (
                "During the 1950s Velmora, like many cities, debated replacing its trams with "
                "diesel buses. A study by the transport committee in 1957, known as the Hadley "
                "Report, recommended closing three of the seven lines by 1965. Two of them, the "
                "Brickfield line and the Saltmarsh line, were indeed closed in 1962, but public "
                "protests led by the Velmora Tram Society saved the third, the Cathedral line. In "
                "1971 the council reversed its policy entirely and approved a modernisation fund "
                "of 48 million crowns to renew track and buy new cars.",
                [
                    ("What is the 1957 committee study usually called?", "the Hadley Report"),
                    ("How many routes did the committee want to shut down?", "three"),
                    ("In which year were the Brickfield and Saltmarsh routes abandoned?", "1962"),
                    ("Which group campaigned to keep the Cathedral line?", "the Velmora Tram Society"),
                    ("How large was the fund approved in 1971?", "48 million crowns"),
                ],
            ),
            (
                "The modern network consists of eight lines numbered 1 to 8, with a total route "
                "length of 57 kilometres and 112 stops. Line 1, the busiest, runs from Northfield "
                "Terminus to Harbour Loop and carries about 41,000 passengers on a typical weekday. "
                "The network uses standard gauge track of 1,435 millimetres throughout, except for "
                "a 600-metre heritage section on Mill Street that retains its original grooved "
                "rail of 1911. All lines meet at the Quay Square interchange, which was rebuilt in "
                "2008 with six platforms under a glass canopy.",
                [
                    ("How many places can passengers board on today's network?", "112 stops"),
                    ("At which terminus does the busiest route start?", "Northfield Terminus"),
                    ("What distance separates the rails across the system?", "1,435 millimetres"),
                    ("On which street can the original rail from 1911 still be found?", "Mill Street"),
                    ("When was the central interchange reconstructed?", "2008"),
                    ("How many platforms does Quay Square have?", "six platforms"),
                ],
            ),
            (
                "Velmora's tramway is owned by the city but operated by Velmora Transit Authority, "
                "an arm's-length company created on 1 January 1994. The authority employs roughly "
                "1,150 staff, of whom about 520 are tram drivers. Its board of seven directors is "
                "chaired by the deputy mayor, and its annual budget for 2023 was 96 million crowns, "
                "of which fares covered 58 percent. The remainder comes from a city subsidy and a "
                "regional transport grant administered by the Lower Vell Province.",
                [
                    ("Which organisation runs the trams day to day?", "Velmora Transit Authority"),
                    ("When was the operating company set up?", "1 January 1994"),
                    ("Approximately how many drivers does the operator employ?", "about 520"),
                    ("Who presides over the board of directors?", "the deputy mayor"),
                    ("What share of the 2023 budget was paid for by ticket revenue?", "58 percent"),
                    ("Which regional body hands out the transport grant?", "Lower Vell Province"),
                ],
            ),
            (
                "The most recent extension, Line 8 to the university campus at Brenholt, opened on "
                "9 September 2019. Construction took 27 months and cost 212 million crowns, "
                "including a 380-metre viaduct over the Vell River. The line added seven new stops "
                "and was the first in Velmora to use stop platforms built at the full floor height "
                "of the cars, 350 millimetres above the rail. Ridership on Line 8 reached 14,000 "
                "per weekday within its first year, well above the forecast of 9,500.",
                [
                    ("Where is the university served by the newest line?", "Brenholt"),
                    ("How long did building the Line 8 extension take?", "27 months"),
                    ("What body of water does the new viaduct span?", "the Vell River"),
                    ("How high above the rail are the new platforms?", "350 millimetres"),
                    ("What weekday ridership had planners predicted for Line 8?", "9,500"),
                ],
            ),
        ],
    },
    {
        "title": "Rolling Stock",
        "split": "train",
        "paragraphs": [
            (
                "The fleet in 2024 comprises 96 passenger trams of three classes. The oldest in "
                "regular service are the 22 cars of the T4 class, built by Kestrel Works in 1986 "
                "and 1987. They are high-floor, single-ended vehicles 17 metres long with three "
                "steps at each door. The T4 cars are restricted to Lines 5 and 6 because those "
                "routes have no level-boarding platforms, and they are due to be withdrawn by the "
                "end of 2027.",
                [
                    ("How many trams carry passengers in the 2024 fleet?", "96 passenger trams"),
                    ("Which manufacturer supplied the T4 cars?", "Kestrel Works"),
                    ("What is the length of a T4 car?", "17 metres"),
                    ("On which routes may the T4 class run?", "Lines 5 and 6"),
                    ("By when will the T4 cars have been retired?", "the end of 2027"),
                ],
            ),
            (
                "The backbone of the fleet is the C7 class, 48 five-section low-floor trams "
                "delivered between 2004 and 2009. Each C7 is 32.5 metres long, seats 64 passengers "
                "and has standing room for a further 146, giving a nominal capacity of 210. The "
                "cars are bidirectional, with a driving cab at each end, and draw current through "
                "a single pantograph on the centre section. A mid-life overhaul of the C7 fleet "
                "started in 2021 at the Ashbury workshop and covers new traction inverters, LED "
                "lighting and refurbished seats.",
                [
                    ("How many trams belong to the C7 class?", "48"),
                    ("How many seated passengers can a C7 carry?", "64 passengers"),
                    ("What is the total nominal capacity of one C7, seated and standing?", "210"),
                    ("Where is the C7 mid-life overhaul taking place?", "the Ashbury workshop"),
                    ("On which part of a C7 is the pantograph mounted?", "the centre section"),
                ],
            ),
            (
                "The newest trams, the 26 cars of the V10 class, were built by Orlen Rail in its "
                "Daskov factory and entered service between 2019 and 2022. They are 100 percent "
                "low-floor and 36 metres long, and each carries an onboard energy store of "
                "supercapacitors that allows it to run up to 800 metres without overhead wire. "
                "This feature is used on the Cathedral Close section, where the heritage authority "
                "refused to allow overhead masts. The V10 order, worth 118 million crowns, included "
                "an option for 10 further cars that the council exercised in 2023.",
                [
                    ("Which company built the V10 trams?", "Orlen Rail"),
                    ("In which town's factory were the V10 cars assembled?", "Daskov"),
                    ("How far can a V10 travel with no power from above?", "800 metres"),
                    ("What stores the energy a V10 uses away from the wire?", "supercapacitors"),
                    ("How many extra V10 cars did the council take up in 2023?", "10 further cars"),
                    ("What was the value of the V10 contract?", "118 million crowns"),
                ],
            ),
            (
                "Besides passenger cars, the authority keeps a works fleet of nine vehicles. The "
                "most important is the rail grinder RG-2, a self-propelled machine bought "
                "second-hand from Lindau in 2015, which reprofiles about 40 kilometres of rail each "
                "year during night possessions. Two overhead line inspection cars, numbered 901 and "
                "902, carry a raised platform and a camera system that measures contact wire wear. "
                "There is also a snow-clearing tram, the 1949 vehicle known to staff as Old Bertha, "
                "which is still used in heavy snowfall.",
                [
                    ("How many vehicles make up the engineering fleet?", "nine vehicles"),
                    ("From which city was the grinding machine purchased?", "Lindau"),
                    ("How much rail does the grinder restore annually?", "about 40 kilometres"),
                    ("What do the camera systems on cars 901 and 902 assess?", "contact wire wear"),
                    ("What nickname do employees give the snow-clearing tram?", "Old Bertha"),
                ],
            ),
            (
                "Each passenger tram follows a maintenance schedule based on distance travelled. A "
                "safety inspection, covering brakes, doors, sanding gear and couplers, is carried "
                "out every 5,000 kilometres, or roughly every nine days for a C7 on Line 1. A "
                "larger intermediate check at 60,000 kilometres includes wheel profile measurement "
                "and bogie inspection, and takes one shift in the workshop. Every 480,000 "
                "kilometres a car receives a general overhaul, when the bogies are removed and sent "
                "to the bogie shop at Ashbury; a general overhaul keeps a tram out of service for "
                "about five weeks.",
                [
                    ("After what distance is a tram given a safety inspection?", "every 5,000 kilometres"),
                    ("Which items are examined during the safety inspection?", "brakes, doors, sanding gear and couplers"),
                    ("How much workshop time does an intermediate check need?", "one shift"),
                    ("At what mileage does a car get its general overhaul?", "480,000 kilometres"),
                    ("For how long is a tram unavailable during a general overhaul?", "about five weeks"),
                ],
            ),
        ],
    },
    {
        "title": "Track and Overhead Line",
        "split": "train",
        "paragraphs": [
            (
                "Most of the Velmora network is laid with grooved rail of type Ri60 embedded in "
                "concrete slab, which reduces noise and allows buses and emergency vehicles to "
                "share the tracks. On the reserved sections along Canal Road and the Brenholt "
                "extension, the track is ballasted and uses flat-bottom rail on concrete sleepers "
                "spaced at 650 millimetres. A grassed track bed, planted with sedum, covers 3.8 "
                "kilometres of line, mainly in the park between Rosehill and the Zoo stop. Sedum "
                "was chosen because it needs mowing only twice a year.",
                [
                    ("What profile of grooved rail is used in the streets?", "Ri60"),
                    ("How far apart are the sleepers on ballasted track?", "650 millimetres"),
                    ("Which plant grows on the green track bed?", "sedum"),
                    ("What length of line has a planted track bed?", "3.8 kilometres"),
                    ("Why was that plant picked for the track bed?", "it needs mowing only twice a year"),
                    ("Along which road does the tram have a reserved ballasted section?", "Canal Road"),
                ],
            ),
            (
                "Rail wear is monitored twice a year by a measuring trolley pushed along the track "
                "at walking pace. Grooved rail is replaced when the head has lost 12 millimetres of "
                "height or when the groove has widened beyond 52 millimetres. Tight curves wear "
                "fastest: the 18-metre radius curve at Tanner's Corner, the sharpest on the "
                "network, has its outer rail replaced roughly every four years, compared with about "
                "25 years on straight track. Replacement work on street sections is scheduled "
                "during the summer school holidays, when traffic is lightest.",
                [
                    ("How often is rail wear checked?", "twice a year"),
                    ("What loss of rail head height leads to replacement?", "12 millimetres"),
                    ("Where is the tightest bend on the network?", "Tanner's Corner"),
                    ("How frequently is the outer rail on that bend renewed?", "roughly every four years"),
                    ("At what time of year is street track usually renewed?", "the summer school holidays"),
                    ("How long does rail on straight track typically last?", "about 25 years"),
                ],
            ),
            (
                "The overhead contact system uses a single copper-silver contact wire of 120 square "
                "millimetres, hung at a normal height of 5.8 metres above the rail. In the Old "
                "Town, where buildings are close together, the wire is supported by span wires "
                "anchored directly to house facades; the authority holds 1,340 such wall anchors "
                "under an agreement with property owners dating from 1913. Elsewhere the wire hangs "
                "from steel poles spaced about 30 metres apart. Contact wire is replaced when its "
                "cross-section has worn down to 80 square millimetres.",
                [
                    ("What alloy is the contact wire made of?", "copper-silver"),
                    ("At what height does the wire normally hang?", "5.8 metres"),
                    ("How many fixings on building walls does the authority use?", "1,340"),
                    ("What spacing is used between the steel poles?", "about 30 metres"),
                    ("How thin may the wire wear before it is renewed?", "80 square millimetres"),
                ],
            ),
            (
                "Power is supplied from the national grid at 22 kilovolts to 14 substations, each "
                "of which converts it to 750 volts direct current for the overhead line. The "
                "voltage was raised from 600 volts in 1998 to allow the longer C7 trams to "
                "accelerate fully. Substations are unmanned and controlled remotely from the Energy "
                "Desk at the control centre on Foundry Lane. Since 2020, regenerative braking "
                "energy that cannot be used by another tram is stored in a battery bank at the "
                "Harbour Loop substation, saving about 1.9 gigawatt-hours a year.",
                [
                    ("At what voltage does the tramway draw power from the grid?", "22 kilovolts"),
                    ("How many substations feed the network?", "14 substations"),
                    ("What is the line voltage today?", "750 volts direct current"),
                    ("In which year was the supply voltage increased?", "1998"),
                    ("Where is surplus braking energy kept?", "the Harbour Loop substation"),
                    ("How much energy does the battery save each year?", "about 1.9 gigawatt-hours"),
                ],
            ),
            (
                "Track work that requires closing a line is organised as a possession, booked "
                "through the Possession Planning Office at least eight weeks in advance. During a "
                "possession the section is isolated electrically, and the overhead line is earthed "
                "at both ends with portable earthing poles before anyone may work on it. The "
                "possession is managed by a Person in Charge of Possession, who holds the only key "
                "to the isolation switches. Night possessions normally run from 00:40 to 05:10, "
                "between the last and first trams.",
                [
                    ("How far ahead must a line closure be booked?", "at least eight weeks"),
                    ("Which office takes the bookings for closures?", "the Possession Planning Office"),
                    ("What equipment earths the wire before work starts?", "portable earthing poles"),
                    ("Who keeps the key to the isolation switches?", "a Person in Charge of Possession"),
                    ("When does a typical overnight closure finish?", "05:10"),
                ],
            ),
        ],
    },
    {
        "title": "Depots and Workshops",
        "split": "train",
        "paragraphs": [
            (
                "Velmora has three tram depots. Northfield depot, opened in 1927, stables 34 trams "
                "and serves Lines 1, 2 and 7. Harbour depot, on reclaimed land near the container "
                "port, was built in 1979 and holds 28 trams for Lines 3, 4 and 8. The smallest, "
                "Rosehill depot, houses the T4 cars for Lines 5 and 6 and the heritage fleet. Heavy "
                "maintenance for all three depots is concentrated at the Ashbury central workshop, "
                "opened in 2002 on the site of a former brewery.",
                [
                    ("When did Northfield depot open?", "1927"),
                    ("How many trams can be kept at Harbour depot?", "28 trams"),
                    ("Where are the historic trams housed?", "Rosehill depot"),
                    ("What occupied the Ashbury site before the workshop was built?", "a former brewery"),
                    ("Which lines are worked from Northfield?", "Lines 1, 2 and 7"),
                ],
            ),
            (
                "The Ashbury workshop covers 14,000 square metres and employs 165 fitters, "
                "electricians and painters. Its main hall has six inspection pits, two underfloor "
                "wheel lathes and a lifting road with synchronised jacks that can raise a complete "
                "five-section tram in 11 minutes. The wheel lathe can reprofile a pair of wheels "
                "without removing them from the bogie, taking around 40 minutes per wheelset. "
                "Bogies and traction motors are overhauled in a separate shop next to the paint "
                "booth, which is large enough for a full 36-metre V10.",
                [
                    ("What is the floor area of the central workshop?", "14,000 square metres"),
                    ("How many tradespeople work at Ashbury?", "165"),
                    ("How quickly can the jacks lift an entire tram?", "11 minutes"),
                    ("How long does turning one wheelset on the lathe take?", "around 40 minutes"),
                    ("How many pits are there in the main hall?", "six inspection pits"),
                ],
            ),
            (
                "Every tram returning to a depot at night passes through an automatic wash plant "
                "and a wheel-checking station. The wheel station, installed at Northfield in 2017 "
                "and at Harbour in 2018, uses lasers to measure flange height and thickness as the "
                "tram moves at 5 km/h. If a flange is thinner than 22 millimetres, the depot "
                "controller is alerted and the car is booked for the wheel lathe. The wash plant "
                "recycles about 80 percent of its water, and the interior of each tram is cleaned "
                "by a night crew of 26 cleaners across the three depots.",
                [
                    ("In which year did Harbour depot get its wheel station?", "2018"),
                    ("What does the wheel station use to measure flanges?", "lasers"),
                    ("How fast does a tram pass through the wheel station?", "5 km/h"),
                    ("Below what flange thickness is a car sent for reprofiling?", "22 millimetres"),
                    ("What share of wash water is reused?", "about 80 percent"),
                    ("How many people clean tram interiors overnight?", "26 cleaners"),
                ],
            ),
            (
                "Spare parts are held in a central store at Ashbury managed by a stock system "
                "called PARTRACK, introduced in 2012. The store keeps around 9,400 distinct part "
                "numbers, from door seals to complete pantographs. Safety-critical items such as "
                "brake pads and track brake magnets are kept at a minimum level of three months' "
                "consumption. For the T4 fleet, whose manufacturer closed in 2001, the workshop "
                "makes many parts itself; a small foundry team of four casts bronze bearing shells "
                "by hand.",
                [
                    ("What is the inventory software called?", "PARTRACK"),
                    ("How many different items does the store stock?", "around 9,400"),
                    ("What minimum reserve is kept for safety-critical parts?", "three months' consumption"),
                    ("When did the T4 builder go out of business?", "2001"),
                    ("What does the foundry team make?", "bronze bearing shells"),
                ],
            ),
        ],
    },
    {
        "title": "Operations and Timetabling",
        "split": "train",
        "paragraphs": [
            (
                "Trams run from 05:15 to 00:30 on weekdays, with a night service on Lines 1 and 3 "
                "every 30 minutes on Friday and Saturday nights. During the morning peak, from "
                "07:00 to 09:00, Line 1 runs every 4 minutes and most other lines every 7 or 8 "
                "minutes. The timetable changes twice a year, on the first Sunday of April and the "
                "second Sunday of October. A reduced summer timetable, with 10 percent fewer "
                "departures, applies during the eight weeks of school holidays.",
                [
                    ("What time does service begin on weekdays?", "05:15"),
                    ("Which routes operate through the night at weekends?", "Lines 1 and 3"),
                    ("How frequent is Line 1 during the morning rush?", "every 4 minutes"),
                    ("On which day does the autumn timetable take effect?", "the second Sunday of October"),
                    ("By how much is service cut in the summer timetable?", "10 percent"),
                ],
            ),
            (
                "The whole network is supervised from the Operations Control Centre on Foundry "
                "Lane, staffed around the clock by at least four controllers. Each controller "
                "watches a sector of two lines on a screen wall fed by the AVL location system, "
                "which reports the position of every tram every 10 seconds. When a tram runs more "
                "than 3 minutes late, the controller may order it to turn short at an intermediate "
                "crossover or hold a following tram to restore even spacing. Radio contact with "
                "drivers uses a digital TETRA network shared with the city's buses.",
                [
                    ("What is the minimum number of controllers on duty?", "at least four controllers"),
                    ("How often are tram positions refreshed on the screen wall?", "every 10 seconds"),
                    ("How late must a tram be before a controller can step in?", "more than 3 minutes"),
                    ("What radio standard do drivers use?", "TETRA"),
                    ("Who else uses the same radio system?", "the city's buses"),
                    ("How many lines is each controller responsible for?", "two lines"),
                ],
            ),
            (
                "Drivers are trained at the authority's school in Northfield, on a course lasting "
                "14 weeks. The first four weeks cover the rulebook, signals and the network's "
                "geography; the next six take place in a simulator and then in service trams with "
                "an instructor; the final four consist of route learning. Trainees must pass a "
                "final practical test with an examiner from the Provincial Rail Safety Office. "
                "Since 2015 all new drivers have been trained on both the C7 and V10 classes, while "
                "only 60 senior drivers remain qualified on the T4.",
                [
                    ("How long does driver training last?", "14 weeks"),
                    ("What do trainees spend the last part of the course on?", "route learning"),
                    ("How many weeks are given over to learning the routes?", "four", 1),
                    ("Which body provides the examiner for the practical test?", "the Provincial Rail Safety Office"),
                    ("How many drivers are still licensed to drive the oldest cars?", "60 senior drivers"),
                    ("What is taught in the opening month of the course?", "the rulebook, signals and the network's geography"),
                ],
            ),
            (
                "Street running tramways in Velmora follow the on-sight principle: drivers must be "
                "able to stop within the distance they can see to be clear, and the maximum speed "
                "is 50 km/h on streets and 70 km/h on reserved track. Tram-specific signals, "
                "showing a white bar instead of coloured lights, control tram movements at 86 "
                "signalised junctions. At 41 of them the tram sends a request by radio beacon about "
                "120 metres before the junction, giving it priority over road traffic. Priority "
                "reduced average journey times on Line 2 by 11 percent after its introduction in "
                "2016.",
                [
                    ("What is the speed limit where trams have their own right of way?", "70 km/h"),
                    ("What do tram signals show in place of coloured lamps?", "a white bar"),
                    ("At how many junctions are trams given precedence?", "41"),
                    ("How far ahead of a junction does a tram ask for priority?", "about 120 metres"),
                    ("How much faster did Line 2 become with priority?", "11 percent"),
                ],
            ),
            (
                "Special services run for major events at the Velmora Arena, which holds 22,000 "
                "spectators and is served by the Arena stop on Line 4. After concerts and football "
                "matches the authority deploys up to 12 additional trams, held on a siding beside "
                "the arena, and marshals queues with a team of 30 staff wearing orange vests. The "
                "aim is to clear the crowd within 45 minutes of the event ending. Event organisers "
                "pay a levy of 1.20 crowns per ticket sold, which funds the extra service.",
                [
                    ("How many people can the arena seat?", "22,000 spectators"),
                    ("Which route serves the arena?", "Line 4"),
                    ("How many extra trams can be called on after an event?", "up to 12 additional trams"),
                    ("What is the target for dispersing the crowd?", "within 45 minutes"),
                    ("How much do organisers contribute per ticket?", "1.20 crowns"),
                    ("What do the queue marshals wear?", "orange vests"),
                ],
            ),
        ],
    },
    {
        "title": "Safety and Incident Procedures",
        "split": "train",
        "paragraphs": [
            (
                "Every incident on the network is classified in one of four categories. Category A "
                "covers collisions causing injury, derailments and fires, and must be reported to "
                "the Provincial Rail Safety Office within two hours. Category B covers collisions "
                "without injury and passengers injured by falls; Category C covers near misses; and "
                "Category D covers equipment faults that did not affect safety. In 2023 the "
                "authority recorded 212 incidents, of which 9 were Category A, most of them "
                "collisions with cars turning left across the tracks.",
                [
                    ("Into how many classes are incidents sorted?", "four categories"),
                    ("How quickly must the most serious incidents be reported?", "within two hours"),
                    ("Which class do near misses fall into?", "Category C"),
                    ("Which class do derailments belong to?", "Category A", 0),
                    ("How many incidents were logged in 2023?", "212 incidents"),
                    ("What caused most of the serious incidents in 2023?", "cars turning left across the tracks"),
                ],
            ),
            (
                "If a tram derails, the driver must immediately lower the pantograph, apply the "
                "parking brake and inform the control centre, quoting the nearest stop and the car "
                "number. Passengers are kept on board unless there is fire or smoke. The control "
                "centre then calls out the rerailing team based at Harbour depot, which carries "
                "hydraulic jacks and rerailing ramps in a dedicated truck and aims to reach any "
                "point on the network within 35 minutes. A derailed tram may not be moved in "
                "service again until a workshop inspector has examined its wheels and bogies.",
                [
                    ("What must a driver lower first after coming off the rails?", "the pantograph"),
                    ("What details does the driver pass to control?", "the nearest stop and the car number"),
                    ("Where is the rerailing crew stationed?", "Harbour depot"),
                    ("What is the crew's target arrival time?", "within 35 minutes"),
                    ("Who must check a derailed tram before it carries passengers again?", "a workshop inspector"),
                ],
            ),
            (
                "Fire safety on the trams relies on smoke detectors in each section and two "
                "6-kilogram powder extinguishers in every driving cab. Since 2020 the V10 trams "
                "have also carried a water mist system over the battery compartments. Drivers "
                "practise evacuation once a year in a depot exercise, during which a full tram of "
                "volunteers must be emptied through the doors and emergency windows within 90 "
                "seconds. The emergency windows, marked with red triangles, can be pushed out after "
                "pulling a rubber cord along the seal.",
                [
                    ("How heavy is each extinguisher?", "6-kilogram"),
                    ("What additional fire protection is fitted to V10 cars?", "a water mist system"),
                    ("How fast must a full tram be emptied during the drill?", "within 90 seconds"),
                    ("How are the escape windows identified?", "red triangles"),
                    ("What must be pulled to release an emergency window?", "a rubber cord"),
                ],
            ),
            (
                "The authority runs a public safety campaign each September called Look Twice, "
                "aimed at cyclists and pedestrians. Cyclists are the group most at risk: narrow "
                "tyres can become trapped in the 45-millimetre rail groove, and 63 cyclists were "
                "treated in hospital after tramway falls in 2022. In response the city has "
                "installed rubber groove fillers at six crossings, which compress under a tram "
                "wheel but support a bicycle. The trial began at Bridge Street in 2021 and has been "
                "extended to crossings near three schools.",
                [
                    ("What is the annual safety campaign called?", "Look Twice"),
                    ("In which month is the campaign held?", "September"),
                    ("How many bicycle riders needed hospital care in 2022?", "63"),
                    ("Where were the groove fillers first tried out?", "Bridge Street"),
                    ("What are the groove fillers made of?", "rubber"),
                ],
            ),
        ],
    },
    {
        "title": "Winter Operations",
        "split": "val",
        "paragraphs": [
            (
                "Velmora's winters are cold, with an average January temperature of minus 4 "
                "degrees Celsius and about 38 days of snowfall a year. The authority's winter plan "
                "runs from 15 November to 31 March. During this period a winter duty manager is on "
                "call every night, and two snow-clearing teams are stationed at Northfield and "
                "Harbour depots. When the forecast predicts more than 5 centimetres of snow, the "
                "plan moves to alert level Amber and the first trams are sent out empty at 04:30 to "
                "keep the track and wire clear.",
                [
                    ("How cold is Velmora on average in January?", "minus 4 degrees Celsius"),
                    ("On what date does the winter plan come into force?", "15 November"),
                    ("On how many days a year does it usually snow?", "about 38 days"),
                    ("What forecast snowfall raises the alert to Amber?", "more than 5 centimetres"),
                    ("At what time do the first empty trams leave on Amber days?", "04:30"),
                ],
            ),
            (
                "Ice on the contact wire is the most disruptive winter problem, because it causes "
                "arcing that damages both the wire and the pantograph carbon strips. To prevent it, "
                "the authority can switch selected substations into a de-icing mode that "
                "circulates a higher current through the wire overnight, warming it by several "
                "degrees. On the exposed Vell River viaduct a special pantograph with a scraper "
                "blade is fitted to one V10 car, number 1017, which runs every 20 minutes through "
                "the night when freezing rain is forecast.",
                [
                    ("What does ice on the overhead wire lead to?", "arcing"),
                    ("Which parts of the pantograph suffer from it?", "carbon strips"),
                    ("Which tram carries the scraper blade?", "number 1017"),
                    ("How often does that tram run when freezing rain is expected?", "every 20 minutes"),
                    ("Where on the network is the scraper pantograph needed?", "Vell River viaduct"),
                ],
            ),
            (
                "Points, the movable sections of track at junctions, are kept free of ice by "
                "electric heaters clamped to the rails. There are 188 sets of points on the "
                "network, of which 146 have heaters, switched on automatically when the rail "
                "temperature falls below 3 degrees Celsius. Heaters draw about 4 kilowatts per set. "
                "Points without heaters, mostly in depot yards, are cleared by hand with brooms and "
                "a de-icing fluid based on potassium formate, which is less harmful to trees and "
                "drains than road salt.",
                [
                    ("How many sets of points does the network have?", "188"),
                    ("How many of them are fitted with heating?", "146"),
                    ("Below what rail temperature do the heaters switch on?", "3 degrees Celsius"),
                    ("What chemical is the hand-applied de-icer made from?", "potassium formate"),
                    ("How much power does one heater use?", "about 4 kilowatts"),
                ],
            ),
            (
                "Old Bertha, the snow-clearing tram, carries a rotating brush at each end and a "
                "plough blade that can be lowered to 20 millimetres above the rail. It is normally "
                "kept at Rosehill depot and needs a crew of three: a driver, a brush operator and a "
                "lookout. In the severe winter of 2010, when 62 centimetres of snow fell in four "
                "days, Old Bertha worked for 71 hours almost without a break, and Line 1 was the "
                "only public transport in the city to keep running throughout.",
                [
                    ("What is mounted at either end of the snow tram?", "a rotating brush"),
                    ("How close to the rail can its plough go?", "20 millimetres"),
                    ("How many people are needed to operate the snow tram?", "three"),
                    ("How much snow fell during the 2010 storm?", "62 centimetres"),
                    ("For how long did the snow tram work without stopping in 2010?", "71 hours"),
                    ("Which route kept running throughout that storm?", "Line 1"),
                ],
            ),
            (
                "Sanding is essential in winter because wet leaves and frost lower the grip between "
                "wheel and rail. Each C7 and V10 tram carries 96 litres of dried quartz sand in "
                "eight hoppers, refilled at the depot every second night from November to March. "
                "Sand is dropped automatically when the wheels slip during braking. Because sand "
                "accumulates in the rail grooves, a vacuum cleaning vehicle runs along the busiest "
                "street sections once a week in winter and removes about 2 tonnes of sand each "
                "month.",
                [
                    ("What kind of sand is carried on the trams?", "dried quartz sand"),
                    ("What volume of sand does one tram hold?", "96 litres"),
                    ("How often are the sand containers topped up in winter?", "every second night"),
                    ("How much sand is collected from the grooves monthly?", "about 2 tonnes"),
                    ("Besides frost, what reduces wheel grip?", "wet leaves"),
                ],
            ),
        ],
    },
    {
        "title": "Fares and Passenger Services",
        "split": "val",
        "paragraphs": [
            (
                "Velmora uses a zonal fare system with three zones. Zone 1 covers the city centre "
                "inside the old ring road, Zone 2 the suburbs, and Zone 3 the Brenholt campus and "
                "the airport shuttle connection. A single ticket valid for 75 minutes in Zones 1 "
                "and 2 costs 2.40 crowns in 2024, and transfers between trams and buses are free "
                "within that time. Children under six travel free, and pupils aged six to eighteen "
                "pay half fare with a school card.",
                [
                    ("How many fare zones does the city have?", "three zones"),
                    ("What area does the innermost zone cover?", "the city centre inside the old ring road"),
                    ("For how long can a single ticket be used?", "75 minutes"),
                    ("What is the price of a single ticket?", "2.40 crowns"),
                    ("Who rides without paying at all?", "Children under six"),
                ],
            ),
            (
                "Most passengers now pay with the VelCard, a contactless smart card launched on 3 "
                "October 2016 that replaced paper ticket strips. Readers at every door deduct the "
                "fare when the card is tapped, and a daily cap of 6.50 crowns means that no rider "
                "pays more than a day pass. A monthly pass costs 58 crowns, and a yearly pass for "
                "pensioners costs 120 crowns. In 2023 about 83 percent of journeys were paid by "
                "VelCard, 12 percent by mobile phone and the rest by cash at stop machines.",
                [
                    ("What is the contactless card called?", "the VelCard"),
                    ("When was the card introduced?", "3 October 2016"),
                    ("What is the most a card holder is charged in one day?", "6.50 crowns"),
                    ("How much does an annual pass for retired people cost?", "120 crowns"),
                    ("What proportion of trips were paid for by phone?", "12 percent"),
                ],
            ),
            (
                "Ticket inspection is carried out by a team of 48 revenue inspectors working in "
                "pairs, who check about 2 percent of passengers. A rider without a valid ticket "
                "pays a penalty fare of 60 crowns, reduced to 30 crowns if paid within 14 days. The "
                "fare evasion rate measured in the annual survey fell from 4.1 percent in 2015 to "
                "2.3 percent in 2023, a decline the authority attributes mainly to the VelCard "
                "daily cap.",
                [
                    ("How many ticket checkers does the authority employ?", "48 revenue inspectors"),
                    ("What is the fine for travelling without a ticket?", "60 crowns"),
                    ("What does the fine drop to if settled quickly?", "30 crowns"),
                    ("What was the fare dodging rate in 2015?", "4.1 percent"),
                    ("What does the operator credit for the fall in evasion?", "the VelCard daily cap"),
                    ("What fraction of riders have their tickets checked?", "about 2 percent"),
                ],
            ),
            (
                "Accessibility has been a priority since the city adopted its Equal Access Plan in "
                "2011. By 2024, 104 of the 112 stops had level boarding, and the remaining eight, "
                "all on Lines 5 and 6, are scheduled for rebuilding by 2027 to coincide with the "
                "withdrawal of the T4 cars. Every low-floor tram has two wheelchair spaces next to "
                "the second door, marked by a blue floor panel, and announces each stop both on "
                "screens and by a recorded voice. Guide dogs travel free of charge.",
                [
                    ("What is the accessibility policy of 2011 called?", "Equal Access Plan"),
                    ("How many stops offered step-free boarding in 2024?", "104"),
                    ("Where on a low-floor tram are the wheelchair places?", "next to the second door"),
                    ("How are the wheelchair areas marked?", "a blue floor panel"),
                    ("How much do assistance dogs pay?", "free of charge"),
                ],
            ),
        ],
    },
]


class QuickstartDataError(ValueError):
    """A question whose answer cannot be located unambiguously in its paragraph."""


def answer_start(context: str, answer: str, occurrence: int | None, where: str) -> int:
    starts = []
    pos = context.find(answer)
    while pos != -1:
        starts.append(pos)
        pos = context.find(answer, pos + 1)
    if not starts:
        raise QuickstartDataError(f"{where}: answer {answer!r} does not occur in its context; fix the answer text")
    if occurrence is None:
        if len(starts) > 1:
            raise QuickstartDataError(
                f"{where}: answer {answer!r} occurs {len(starts)} times; add an occurrence index (0-based)"
            )
        return starts[0]
    if not 0 <= occurrence < len(starts):
        raise QuickstartDataError(
            f"{where}: occurrence {occurrence} out of range for {answer!r} ({len(starts)} matches)"
        )
    return starts[occurrence]


def check_paragraph_length(context: str, where: str) -> None:
    words = len(context.split())
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise QuickstartDataError(f"{where}: paragraph has {words} words, expected {MIN_WORDS}-{MAX_WORDS}")


def build_article(article_number: int, article: dict) -> dict:
    paragraphs = []
    for p_number, (context, qas) in enumerate(article["paragraphs"], start=1):
        check_paragraph_length(context, f"article {article_number} paragraph {p_number}")
        records = []
        for q_number, qa in enumerate(qas, start=1):
            question, answer = qa[0], qa[1]
            occurrence = qa[2] if len(qa) > 2 else None
            qa_id = f"{ID_PREFIX}-a{article_number:02d}-p{p_number}-q{q_number}"
            start = answer_start(context, answer, occurrence, qa_id)
            records.append({"id": qa_id, "question": question, "answers": [{"text": answer, "answer_start": start}]})
        paragraphs.append({"context": context, "qas": records})
    return {"title": article["title"], "paragraphs": paragraphs}


def build_splits() -> dict[str, dict]:
    splits: dict[str, list] = {"train": [], "val": []}
    for number, article in enumerate(ARTICLES, start=1):
        splits[article["split"]].append(build_article(number, article))
    return {name: {"version": "1.1", "data": data} for name, data in splits.items()}


def write_splits(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, dataset in build_splits().items():
        path = out_dir / f"{name}.json"
        # Fixed formatting and a trailing newline keep regeneration byte-identical.
        path.write_text(json.dumps(dataset, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written[name] = path
    return written


def summarise(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = sum(len(a["paragraphs"]) for a in data)
    questions = sum(len(p["qas"]) for a in data for p in a["paragraphs"])
    return f"{path}: {len(data)} articles, {paragraphs} paragraphs, {questions} questions"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="folder for train.json and val.json")
    args = parser.parse_args(argv)
    try:
        written = write_splits(args.out_dir)
    except QuickstartDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in written.values():
        print(summarise(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
