"""The contextual recipe's pools: topics and measures, tools, and the phrasings of questions and answers.

Every pool is plain data (docs/contextual.md lists their sizes). Phrasings are ``str.format``
templates with named fields, so a test can read them as data without running the generator.

Passage facts are ``(topic, place, year, measure, value)``. A question names all four keys; an
answer span restates all four with the value, so it carries every word of the question that the
passages contain. Question phrasings use no word that the passage or filler phrasings use (apart
from the fact's own words), so nothing but the fact's keys ties a question to a passage.
"""

from __future__ import annotations

from typing import Any

# topic -> [(measure, unit, low, high)]: every topic has three measures
TOPICS: dict[str, list[tuple[str, str, int, int]]] = {
    "bee keeping": [
        ("hive count", "hives", 20, 900),
        ("honey harvest", "kg", 100, 9000),
        ("swarm count", "swarms", 2, 90),
    ],
    "glass making": [
        ("furnace count", "furnaces", 2, 60),
        ("bottle output", "bottles", 1000, 90000),
        ("sand intake", "tonnes", 50, 5000),
    ],
    "river ports": [
        ("barge tally", "barges", 100, 9000),
        ("cargo volume", "tonnes", 1000, 900000),
        ("berth count", "berths", 3, 80),
    ],
    "tide tables": [
        ("spring tide height", "cm", 200, 1400),
        ("neap tide height", "cm", 50, 400),
        ("gauge count", "gauges", 2, 40),
    ],
    "rail signals": [
        ("signal fault tally", "faults", 5, 900),
        ("signal box count", "boxes", 3, 120),
        ("relay stock", "relays", 10, 3000),
    ],
    "paper mills": [
        ("pulp output", "tonnes", 500, 80000),
        ("water draw", "megalitres", 10, 4000),
        ("mill workforce", "workers", 20, 3000),
    ],
    "salt flats": [
        ("salt yield", "tonnes", 100, 50000),
        ("brine pool count", "pools", 4, 300),
        ("evaporation depth", "mm", 500, 3000),
    ],
    "wind farms": [
        ("turbine count", "turbines", 3, 400),
        ("power output", "MWh", 1000, 900000),
        ("outage total", "hours", 10, 2000),
    ],
    "spice routes": [
        ("caravan count", "caravans", 5, 900),
        ("pepper trade", "sacks", 100, 60000),
        ("toll income", "crowns", 1000, 90000),
    ],
    "lighthouses": [
        ("lamp runtime", "hours", 2000, 9000),
        ("keeper roster", "keepers", 1, 30),
        ("ship sighting tally", "ships", 100, 20000),
    ],
    "bridge design": [
        ("span length", "m", 20, 2000),
        ("pier count", "piers", 2, 60),
        ("steel tonnage", "tonnes", 100, 90000),
    ],
    "orchard pests": [
        ("moth trap count", "traps", 10, 3000),
        ("infestation tally", "trees", 5, 9000),
        ("spray schedule", "rounds", 1, 40),
    ],
    "moon phases": [
        ("eclipse tally", "sightings", 1, 400),
        ("observer roster", "observers", 3, 900),
        ("clear sky tally", "nights", 20, 300),
    ],
    "tea blends": [
        ("blend count", "blends", 3, 300),
        ("leaf purchase", "kg", 100, 40000),
        ("tasting calendar", "sessions", 5, 900),
    ],
    "sheep farming": [
        ("flock size", "sheep", 50, 20000),
        ("wool clip", "kg", 500, 90000),
        ("lambing total", "lambs", 20, 9000),
    ],
    "canal locks": [
        ("lock traffic", "boats", 200, 40000),
        ("repair log", "repairs", 1, 90),
        ("water level", "cm", 100, 900),
    ],
    "coffee roasting": [
        ("batch count", "batches", 50, 9000),
        ("bean import", "sacks", 100, 40000),
        ("roaster count", "roasters", 2, 80),
    ],
    "town libraries": [
        ("loan total", "loans", 1000, 900000),
        ("reader card count", "cards", 200, 90000),
        ("reading room count", "rooms", 1, 40),
    ],
    "fishing fleets": [
        ("trawler count", "trawlers", 3, 400),
        ("herring catch", "tonnes", 100, 90000),
        ("harbour stay", "days", 50, 360),
    ],
    "vineyard harvests": [
        ("grape yield", "tonnes", 10, 9000),
        ("cask count", "casks", 20, 9000),
        ("picker count", "pickers", 10, 2000),
    ],
    "clock towers": [
        ("bell strike tally", "strikes", 1000, 90000),
        ("winding time", "hours", 20, 900),
        ("repair bill", "crowns", 100, 60000),
    ],
    "mountain huts": [
        ("overnight stay tally", "stays", 100, 40000),
        ("bunk count", "bunks", 4, 200),
        ("rescue call tally", "calls", 1, 300),
    ],
    "stone quarries": [
        ("granite output", "blocks", 100, 60000),
        ("blast count", "blasts", 5, 900),
        ("crew count", "crews", 2, 90),
    ],
    "silk weaving": [
        ("loom count", "looms", 5, 900),
        ("silk output", "bolts", 100, 40000),
        ("dye batch count", "batches", 10, 3000),
    ],
    "tram networks": [
        ("tram count", "trams", 5, 400),
        ("rider total", "journeys", 10000, 900000),
        ("track length", "km", 5, 400),
    ],
    "cheese dairies": [
        ("cheese output", "wheels", 100, 90000),
        ("milk intake", "litres", 1000, 900000),
        ("cellar count", "cellars", 1, 40),
    ],
    "forest fires": [
        ("burned area", "hectares", 5, 90000),
        ("watch tower count", "towers", 2, 90),
        ("crew roster", "crews", 2, 300),
    ],
    "postal routes": [
        ("letter volume", "letters", 1000, 900000),
        ("parcel volume", "parcels", 500, 90000),
        ("courier count", "couriers", 5, 900),
    ],
    "street markets": [
        ("stall count", "stalls", 10, 900),
        ("market calendar", "days", 20, 360),
        ("licence count", "licences", 10, 3000),
    ],
    "salmon runs": [
        ("salmon tally", "salmon", 100, 90000),
        ("fish ladder count", "ladders", 1, 30),
        ("spawning bed count", "beds", 5, 900),
    ],
}

# Passage (and background) sentences: {topic} {place} {year} {measure} {value} {unit}
PASSAGE_TEMPLATES: list[str] = [
    "In {year}, the {measure} for {topic} in {place} was {value} {unit}.",
    "{place} put its {measure} for {topic} at {value} {unit} in {year}.",
    "The {year} ledger of {place} gives {a_measure} of {value} {unit} for {topic}.",
    "For {topic} in {place}, the {measure} reached {value} {unit} in {year}.",
    "Ledgers from {place} show {a_measure} of {value} {unit} for {topic} in {year}.",
    "{place} logged {a_measure} of {value} {unit} for {topic} during {year}.",
    "During {year}, {topic} in {place} came with {a_measure} of {value} {unit}.",
]

# The first question about a fact: {topic} {place} {year} {measure}
QUESTION_TEMPLATES: list[tuple[str, str]] = [
    ("what_was", "What was the {measure} for {topic} in {place} in {year}?"),
    ("how_high", "How high was the {measure} for {topic} in {place} in {year}?"),
    ("tell_me", "Can you tell me the {measure} for {topic} in {place} for {year}?"),
    ("need", "I need the {year} {measure} for {topic} in {place}."),
    ("looking_for", "I'm looking for the {measure} that {place} had for {topic} in {year}."),
    ("find", "Please find the {measure} for {topic} in {place} in {year}."),
    ("which_figure", "Which figure did {place} have as its {measure} for {topic} in {year}?"),
    ("curious", "I'm curious about the {measure} for {topic} in {place} back in {year}."),
]
# Each further fact of the same question: a sentence that names all its keys again
FOLLOWUP_TEMPLATES: list[tuple[str, str]] = [
    ("and_the", "And the {measure} for {topic} in {place} in {year}?"),
    ("also", "Also, what was the {measure} for {topic} in {place} in {year}?"),
    ("same_for", "Then the same for the {measure} for {topic} in {place} in {year}."),
    ("what_about", "What about the {measure} for {topic} in {place} in {year}?"),
]
# Integration spans: every key of the fact and its value
ANSWER_TEMPLATES: list[str] = [
    "the {measure} for {topic} in {place} was {value} {unit} in {year}",
    "{place} had {a_measure} of {value} {unit} for {topic} in {year}",
    "in {year} the {measure} for {topic} in {place} stood at {value} {unit}",
    "{place} reported {a_measure} of {value} {unit} for {topic} in {year}",
]
# Sentence frames around a cited passage's span: {n} is the passage number
CITE_TEMPLATES: list[str] = [
    "Passage [{n}] answers this: {span}.",
    "According to passage [{n}], {span}.",
    "Passage [{n}] states that {span}.",
    "From passage [{n}]: {span}.",
]

# Tools: name -> description, parameters (name -> JSON type), facets, needs. A facet is an answer
# span over the tool's result; it names the request's subject again, so it is about what was
# asked. A need is what a user says (it carries the call's arguments) and the facets that answer
# it, most important first.
TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "description": "Forecast for a city on a date: temperature, condition, precipitation.",
        "parameters": {"city": "string", "date": "string"},
        "facets": [
            "{city} will be {temp_c}°C on {date}",
            "{city} expects {condition} on {date}",
            "{city} gets {precip_mm} mm of rain on {date}",
        ],
        "needs": [
            ("What will it be like outside in {city} on {date}?", [0, 1, 2]),
            ("Will I need an umbrella in {city} on {date}?", [2, 1]),
            ("How warm will it be in {city} on {date}?", [0]),
            ("I'm packing for {city} on {date}; what should I expect outside?", [1, 0]),
        ],
    },
    "get_stock_price": {
        "description": "Latest trade of a listed share: price and change today.",
        "parameters": {"symbol": "string"},
        "facets": ["{symbol} trades at {price}", "{symbol} has moved {change_pct:+}% today"],
        "needs": [
            ("What is {symbol} trading at right now?", [0]),
            ("How are {symbol} shares doing today?", [1, 0]),
            ("Give me a quote for {symbol}.", [0, 1]),
        ],
    },
    "lookup_population": {
        "description": "Resident count of a city from its latest census.",
        "parameters": {"city": "string"},
        "facets": ["{city} has {population:,} residents", "{city} counted them in its {census_year} census"],
        "needs": [
            ("How many people live in {city}?", [0]),
            ("How big is {city} by residents, and how recent is that count?", [0, 1]),
            ("What's the headcount of {city}?", [0]),
        ],
    },
    "convert_currency": {
        "description": "Converts an amount between currencies at today's rate.",
        "parameters": {"amount": "number", "from": "string", "to": "string"},
        "facets": ["{amount} {from} comes to {result} {to}", "one {from} buys {rate} {to}"],
        "needs": [
            ("How much is {amount} {from} in {to}?", [0]),
            ("Convert {amount} {from} to {to} for me. What does one {from} buy in {to}?", [0, 1]),
            ("I have {amount} {from}; what is that in {to}?", [0]),
        ],
    },
    "get_flight_status": {
        "description": "Status of a flight: state, departure gate, delay in minutes.",
        "parameters": {"flight": "string"},
        "facets": [
            "flight {flight} is {status}",
            "flight {flight} leaves from gate {gate}",
            "flight {flight} runs {delay_min} min late",
        ],
        "needs": [
            ("Is flight {flight} running late?", [0, 2]),
            ("Where does {flight} leave from, and is it late?", [1, 2]),
            ("Any news on flight {flight}?", [0, 1, 2]),
        ],
    },
    "get_air_quality": {
        "description": "Air quality index and fine-particle level of a city today.",
        "parameters": {"city": "string"},
        "facets": ["{city} has an AQI of {aqi}", "{city} measures {pm25} µg/m³ of fine particles"],
        "needs": [
            ("Is it safe to go running in {city} today?", [0, 1]),
            ("Can I breathe easy outdoors in {city} today?", [0]),
            ("Should I worry about smog in {city} today?", [1, 0]),
        ],
    },
    "get_package_status": {
        "description": "Where a parcel is: carrier status and expected delivery date.",
        "parameters": {"tracking_id": "string"},
        "facets": ["parcel {tracking_id} is {status}", "parcel {tracking_id} is due on {eta}"],
        "needs": [
            ("Where is my parcel {tracking_id}?", [0, 1]),
            ("When will package {tracking_id} arrive?", [1]),
            ("Has {tracking_id} shipped yet?", [0]),
        ],
    },
    "get_local_time": {
        "description": "Local time and UTC offset of a city.",
        "parameters": {"city": "string"},
        "facets": ["the clock in {city} reads {local_time}", "{city} runs at UTC{utc_offset:+}"],
        "needs": [
            ("What hour is it in {city} right now?", [0]),
            ("Is it too late to call someone in {city}?", [0]),
            ("What's the clock showing in {city} now, and what zone is it in?", [0, 1]),
        ],
    },
    "get_route": {
        "description": "Road distance and driving minutes between two cities.",
        "parameters": {"origin": "string", "destination": "string"},
        "facets": ["{origin} to {destination} is {km} km", "{origin} to {destination} takes {minutes} min by car"],
        "needs": [
            ("How far is it from {origin} to {destination} by road?", [0]),
            ("How long is the drive from {origin} to {destination}?", [1, 0]),
            ("Can I drive from {origin} to {destination} before lunch?", [1]),
        ],
    },
    "get_sun_times": {
        "description": "Sunrise and sunset of a city on a date.",
        "parameters": {"city": "string", "date": "string"},
        "facets": ["the sun rises in {city} at {sunrise} on {date}", "the sun sets in {city} at {sunset} on {date}"],
        "needs": [
            ("When does dawn break in {city} on {date}?", [0]),
            ("I want to photograph dusk in {city} on {date}; when is it?", [1]),
            ("How long is daylight in {city} on {date}?", [0, 1]),
        ],
    },
}

TOOL_INSTRUCTIONS: list[str] = [
    "You can call the tools listed below. Call the one that serves the user's need, then answer from its result.",
    "Tools are available. Pick the tool the request needs, call it with arguments from the request, use its return.",
    "Answer the user with the help of the tools below: call what the request needs and build the reply on the results.",
]
PASSAGE_INSTRUCTIONS: list[str] = [
    "Answer the user's question from the numbered passages. Cite only the passages that answer it.",
    "Use the numbered passages to answer. Some are close to the question but not the answer: cite only those that are.",
    "The numbered passages hold the answer among near misses. Answer and cite the passages you use by number.",
]
TOOL_CLOSERS: list[str] = ["", " Anything else you need?", " That is the latest the tool has.", " Hope that helps."]

CONDITIONS = ["sunny", "cloudy", "light rain", "fog", "snow", "wind", "clear skies", "overcast skies", "drizzle"]
WET_CONDITIONS = frozenset({"light rain", "snow", "drizzle"})
FLIGHT_STATES = ["on time", "delayed", "boarding", "departed", "cancelled"]
PARCEL_STATES = ["in transit", "out for delivery", "held at the depot", "delivered", "awaiting pickup"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF", "SEK", "NOK", "CAD", "AUD", "INR"]
